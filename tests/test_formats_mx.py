"""MX v1.0 block formats and NVFP4: quantize/dequantize and block dot vs the spec rules and Fractions."""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from forma.sim.formats import parse_format

SEED = 20261122
MX = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8"]
EMAX = {"mxfp8_e4m3": 8, "mxfp8_e5m2": 15, "mxfp6_e3m2": 4, "mxfp6_e2m3": 2, "mxfp4": 2, "mxint8": 0}
ML = {"mxfp8_e4m3": ml_dtypes.float8_e4m3fn, "mxfp8_e5m2": ml_dtypes.float8_e5m2,
      "mxfp6_e3m2": ml_dtypes.float6_e3m2fn, "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
      "mxfp4": ml_dtypes.float4_e2m1fn}


def spec_quantize(name, block):
    """OCP MX v1.0 §6.3 written out for one block with ml_dtypes as the element rounder."""
    amax = max(abs(float(v)) for v in block)
    shared = (int(np.floor(np.log2(amax))) if amax > 0 else -127) - EMAX[name]
    shared = max(shared, -127)
    x = np.array(block, dtype=np.float64) / 2.0 ** shared
    if name == "mxint8":   # INT8, implicit scale 2**-6, rne, clamped to +-127/64
        q = np.clip(np.round(x * 64), -127, 127) / 64
    else:                  # rne, saturating to the element's max normal (clip first: exact)
        mx = float(ml_dtypes.finfo(ML[name]).max)
        q = np.clip(x, -mx, mx).astype(np.float32).astype(ML[name]).astype(np.float64)
    return shared + 127, q * 2.0 ** shared


@pytest.mark.parametrize("name", MX)
def test_mx_attributes(name):
    f = parse_format(name)
    assert (f.block_size, f.scale_format.name, f.emax_elem, f.family) == (32, "float8_e8m0fnu", EMAX[name], "mx")
    assert f.bits == f.element_format.bits


@pytest.mark.parametrize("name", MX)
def test_quantize_matches_spec_algorithm(name):
    """§6.3: shared_exp = floor(log2(amax)) - emax_elem; elements rne + saturation."""
    f = parse_format(name)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((64, 32)) * np.exp2(rng.integers(-20, 20, (64, 1)))
    x[0] = 0.0
    x[1, :] = 0.0
    x[1, 3] = 2.0 ** -140                # shared exponent clamps at -127
    x[2] = np.linspace(-1, 1, 32) * 448  # exact element max
    scales, elems = f.quantize(x)
    deq = f.dequantize(scales, elems)
    for i in range(x.shape[0]):
        s, want = spec_quantize(name, x[i])
        assert scales[i] == s, (name, i, SEED)
        assert np.array_equal(deq[i], want), (name, i, SEED)


def test_nan_and_inf_give_nan_scale():
    """A NaN or Inf in a block -> scale 0xFF; §5.3: a NaN scale makes every element NaN."""
    f = parse_format("mxfp8_e4m3")
    x = np.ones((3, 32))
    x[0, 5] = np.nan
    x[1, 7] = -np.inf
    s, e = f.quantize(x)
    assert list(s) == [0xFF, 0xFF, 127 - 8]
    d = f.dequantize(s, e)
    assert np.all(np.isnan(d[:2])) and np.all(d[2] == 1.0)


def test_worked_example_mxfp4():
    """amax 6.0 -> shared exp floor(log2 6) - 2 = 0 (scale code 127); 5.0 is a tie 4|6 -> 4 (even)."""
    f = parse_format("mxfp4")
    x = np.zeros(32)
    x[:5] = [6.0, 5.0, -0.25, 0.75, 2.5]
    s, e = f.quantize(x)
    assert s[0] == 127
    assert list(f.dequantize(s, e)[:5]) == [6.0, 4.0, -0.0, 1.0, 2.0]  # 0.75: tie 0.5|1.0 -> even code
    x[0] = 13.0                          # floor(log2 13) - 2 = 1: scale 2, 13/2 = 6.5 saturates to 6
    s, e = f.quantize(x)
    assert s[0] == 128 and f.dequantize(s, e)[0] == 12.0


@pytest.mark.parametrize("name", MX)
def test_block_dot_exact_and_rounded(name):
    """§6.2: dot = 2**(sa+sb) * sum(a_i*b_i), exact; then one rounding to the output format."""
    f = parse_format(name)
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((50, 32)) * np.exp2(rng.integers(-30, 30, (50, 1)))
    b = rng.standard_normal((50, 32)) * np.exp2(rng.integers(-30, 30, (50, 1)))
    sa, ea = f.quantize(a)
    sb, eb = f.quantize(b)
    m, e, nan = (v.ravel() for v in f.block_dot_exact(sa, ea, sb, eb))
    da, db = f.dequantize(sa, ea), f.dequantize(sb, eb)
    out = parse_format("float32")
    got = out.decode(f.block_dot(sa, ea, sb, eb, out)).ravel()
    for i in range(50):
        want = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(da[i], db[i]))
        assert Fraction(int(m[i])) * Fraction(2) ** int(e[i]) == want, (name, i, SEED)
        assert got[i] == float(np.float32(float(want))) or abs(Fraction(float(got[i])) - want) <= abs(Fraction(float(np.float32(float(want)))) - want)
        assert not nan[i]


def test_block_dot_nan_scale():
    f = parse_format("mxfp4")
    e = np.zeros(32, dtype=np.uint8)
    got = f.block_dot(np.uint8(0xFF), e, np.uint8(127), e, "float16")
    assert np.isnan(parse_format("float16").decode(got))


def test_nvfp4():
    """NVFP4: k = 16, scale = E4M3(amax / 6) rne; elements E2M1(x / scale) rne, saturating."""
    f = parse_format("nvfp4")
    assert (f.block_size, f.scale_format.name, f.element_format.name) == (16, "float8_e4m3fn", "float4_e2m1fn")
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((40, 16)) * 3
    s, e = f.quantize(x)
    amax = np.abs(x).max(axis=1)
    want_s = (amax / 6).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    assert s.shape == (40, 1)
    assert np.array_equal(parse_format("float8_e4m3fn").decode(s[:, 0]), want_s.astype(np.float64))
    sv = want_s.astype(np.float64)[:, None]
    want_e = np.clip(x / sv, -6, 6).astype(np.float32).astype(ml_dtypes.float4_e2m1fn).astype(np.float64)
    assert np.array_equal(f.dequantize(s, e), want_e * sv)


def test_partial_block_and_shapes():
    f = parse_format("mxfp8_e5m2")
    x = np.arange(2 * 40, dtype=np.float64).reshape(2, 40)
    s, e = f.quantize(x)
    assert s.shape == (2, 2) and e.shape == (2, 40)
    assert f.dequantize(s, e).shape == (2, 40)


def test_block_dot_propagates_nan_and_infinite_elements():
    """A non-finite element decides the block's result whatever the (finite) scales: inf stays
    inf with its sign, inf x 0 and inf - inf give NaN; a NaN scale gives NaN."""
    fmt = parse_format("mxfp8_e5m2")
    elem = fmt.element_format
    one, zero = (int(elem.encode(np.array([v]))[0]) for v in (1.0, 0.0))
    inf, ninf = (int(elem.encode(np.array([v]))[0]) for v in (np.inf, -np.inf))
    ones = np.full(32, one, dtype=np.uint64)

    def block(first, second=None):
        codes = ones.copy()
        codes[0] = first
        if second is not None:
            codes[1] = second
        return codes

    cases = [(block(inf), ones, np.inf), (block(ninf), ones, -np.inf),
             (block(inf), block(zero), np.nan), (block(inf, ninf), ones, np.nan)]
    for ea, eb, expected in cases:
        got = parse_format("float32").decode(fmt.block_dot(np.array([100]), ea, np.array([3]), eb,
                                                           "float32"))[0]
        assert (np.isnan(got) and np.isnan(expected)) or got == expected, (ea[:2], eb[:2], got)
    nan_scale = fmt.block_dot(np.array([0xFF]), ones, np.array([127]), ones, "float32")
    assert np.isnan(parse_format("float32").decode(nan_scale)[0])
