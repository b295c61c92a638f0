"""Integers and fixed point vs apytypes (all its quantization modes, WRAP/SAT) and the exact oracle."""
from fractions import Fraction

import apytypes as apy
import numpy as np
import pytest

from forma.sim.formats import exact, parse_format

SEED = 20261122
Q = apy.QuantizationMode
O = apy.OverflowMode
# ap_fixed quantization name -> apytypes mode (TRN = toward -inf, TRN_ZERO = toward 0, ...)
APY_Q = {"TRN": Q.TO_NEG, "TRN_ZERO": Q.TO_ZERO, "RND": Q.TIES_POS, "RND_ZERO": Q.TIES_ZERO,
         "RND_MIN_INF": Q.TIES_NEG, "RND_INF": Q.TIES_AWAY, "RND_CONV": Q.TIES_EVEN}
APY_O = {"WRAP": O.WRAP, "SAT": O.SAT}
FORMATS = ["fixed<8,3>", "ufixed<8,3>", "fixed<6,-2>", "fixed<12,12>", "ufixed<5,0>", "fixed<16,6>",
           "fixed<1,1>", "ufixed<7,7>"]


def apy_codes(fmt, x, quant, ovf):
    """apytypes: exact input (float64 -> wide APyFixed), then cast with the ap_fixed modes."""
    wide = apy.APyFixedArray.from_float(x, int_bits=70, frac_bits=1100)
    y = wide.cast(int_bits=fmt.int_bits, frac_bits=fmt.frac_bits, quantization=APY_Q[quant],
                  overflow=APY_O[ovf])
    bits = np.asarray(y.to_bits(), dtype=np.uint64)
    if not fmt.signed:  # apytypes is two's complement: an unsigned format is one bit narrower
        bits = bits & ((1 << fmt.bits) - 1)
    return bits


def test_inputs(fmt, rng):
    lsb, top = fmt.lsb, max(abs(fmt.max_value), abs(fmt.min_value)) + fmt.lsb
    grid = np.arange(-4 * top / lsb, 4 * top / lsb + 1, 0.25)[:: max(1, int(32 * top / lsb) // 4000)] * lsb
    return np.concatenate([grid, rng.uniform(-3 * top, 3 * top, 3000),
                           (np.arange(-40, 41) + 0.5) * lsb, [0.0, -0.0]])


test_inputs.__test__ = False


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("quant", list(APY_Q))
@pytest.mark.parametrize("ovf", list(APY_O))
def test_encode_vs_apytypes(name, quant, ovf):
    base = parse_format(name)
    rng = np.random.default_rng(SEED)
    x = test_inputs(base, rng)
    ref_fmt = parse_format(f"{'' if base.signed else 'u'}fixed<{base.bits},{base.int_bits}>")
    if not base.signed:  # apytypes: model ufixed<W,I> as fixed<W+1,I+1> then keep W bits (SAT only >= 0)
        if ovf == "SAT":
            x = np.abs(x)
        wide = apy.APyFixedArray.from_float(x, int_bits=70, frac_bits=1100)
        y = wide.cast(int_bits=base.int_bits + 1, frac_bits=base.frac_bits, quantization=APY_Q[quant],
                      overflow=APY_O[ovf])
        want = np.asarray(y.to_bits(), dtype=np.uint64) & ((1 << base.bits) - 1)
        if ovf == "SAT":
            want = np.minimum(want, np.where(np.asarray(y.to_bits(), dtype=np.uint64) >> base.bits, base.raw_max, want))
    else:
        want = apy_codes(base, x, quant, ovf)
    got = ref_fmt.encode(x, rounding=quant, saturate=ovf)
    bad = np.flatnonzero(got.astype(np.uint64) != want)
    assert bad.size == 0, (f"{name} {quant} {ovf}: x={x[bad[0]]!r} got {int(got[bad[0]]):#x} "
                           f"want {int(want[bad[0]]):#x} seed={SEED}")


@pytest.mark.parametrize("name", ["fixed<8,3,RND_CONV,SAT_SYM>", "fixed<8,3,RND,SAT_ZERO>",
                                  "ufixed<6,2,RND_INF,SAT_SYM>", "int8_narrow", "uint4_narrow",
                                  "int4", "fixed<10,2,RND_MIN_INF,SAT>"])
def test_encode_modes_vs_exact_oracle(name):
    """SAT_SYM/SAT_ZERO and narrow ranges (absent from apytypes) vs the Fraction oracle."""
    f = parse_format(name)
    rng = np.random.default_rng(SEED)
    x = test_inputs(f, rng)
    got = f.encode(x)
    want = [exact.round_value(f, Fraction(float(v))) for v in x]
    assert np.array_equal(got.astype(np.int64), np.array(want)), f"{name} seed={SEED}"


@pytest.mark.parametrize("name", ["int8", "uint8", "int4", "fixed<8,3>", "fixed<8,3,RND_CONV,SAT>",
                                  "ufixed<8,4,RND,SAT>", "int8_narrow", "fixed<6,2,RND_ZERO,SAT_SYM>"])
@pytest.mark.parametrize("op", ["mul", "add", "sub"])
def test_exhaustive_arith_vs_exact_oracle(name, op):
    f = parse_format(name)
    c = f.all_codes()
    a, b = (v.ravel() for v in np.meshgrid(c, c, indexing="ij"))
    if a.size > 20000:
        sel = np.random.default_rng(SEED).choice(a.size, 20000, replace=False)
        a, b = a[sel], b[sel]
    got = getattr(f, op)(a, b)
    want = np.array([exact.op(f, op, int(x), int(y)) for x, y in zip(a, b)])
    assert np.array_equal(got.astype(np.int64), want), f"{name} {op} seed={SEED}"


@pytest.mark.parametrize("name", ["fixed<8,3>", "fixed<16,6,RND_CONV,SAT>", "int16", "fixed<32,16,RND>",
                                  "ufixed<12,4,RND_INF,SAT>", "fixed<40,10,RND_CONV,SAT>"])
def test_mul_add_fma_vs_apytypes(name):
    """Exact APyFixed arithmetic, then the format's own cast, equals f.mul/add/fma."""
    f = parse_format(name)
    rng = np.random.default_rng(SEED)
    n = 2000
    raws = [rng.integers(f.raw_min, f.raw_max + 1, n) for _ in range(3)]
    codes = [f.from_raw(r) for r in raws]
    ib, fb = f.int_bits + (0 if f.signed else 1), f.frac_bits
    A, B, C = (apy.APyFixedArray([int(v) & ((1 << (f.bits + 1)) - 1) for v in r], int_bits=ib + 1, frac_bits=fb)
               for r in raws)
    q, o = APY_Q[f.quant], APY_O.get(f.overflow)
    for op, exact_arr, got in (("mul", A * B, f.mul(codes[0], codes[1])),
                               ("add", A + B, f.add(codes[0], codes[1])),
                               ("fma", A * B + C, f.fma(*codes))):
        y = exact_arr.cast(int_bits=ib, frac_bits=fb, quantization=q, overflow=o)
        want = np.array([int(v) & ((1 << f.bits) - 1) for v in np.asarray(y.to_bits(), dtype=object)])
        if not f.signed and f.overflow == "SAT":
            val = np.asarray(y.to_numpy())
            want = np.where(val < 0, 0, want)
        assert np.array_equal(got.astype(np.uint64).astype(object), want.astype(object)), f"{name} {op} seed={SEED}"


def test_raw_interface():
    f = parse_format("int8")
    assert (f.bits, f.signed, f.raw_min, f.raw_max, f.frac_bits, f.family) == (8, True, -128, 127, 0, "int")
    assert np.array_equal(f.to_raw(np.array([0, 1, 127, 128, 255], dtype=np.uint8)), [0, 1, 127, -128, -1])
    assert np.array_equal(f.from_raw([-128, -1, 5]), [128, 255, 5])
    with pytest.raises(ValueError, match=r"raw value 128 is outside \[-128, 127\]"):
        f.from_raw([128])
    n = parse_format("int8_narrow")
    assert (n.raw_min, n.raw_max) == (-127, 127)
    with pytest.raises(ValueError, match="not a valid code"):
        n.check_codes([0x80])
    one = parse_format("int1")
    assert np.array_equal(one.decode([0, 1]), [0.0, -1.0])
    u = parse_format("uint4")
    assert (u.raw_min, u.raw_max, u.code_dtype) == (0, 15, np.uint8)
    assert parse_format("int32").code_dtype == np.uint32


def test_int_wraps_and_saturates():
    f = parse_format("int8")
    assert f.to_raw(f.mul(f.from_raw([100]), f.from_raw([3])))[0] == (300 + 128) % 256 - 128
    assert f.to_raw(f.encode([300.0], saturate=True))[0] == 127
    assert list(f.to_raw(f.encode([2.5, -2.5, 3.5]))) == [2, -2, 4]      # rne
    n = parse_format("int8_narrow")
    assert n.to_raw(n.mul(n.from_raw([-100]), n.from_raw([2])))[0] == -127


def test_codes_out_of_range_raise():
    f = parse_format("uint4")
    for bad in ([16], [-1], [1.5]):
        with pytest.raises(ValueError):
            f.decode(bad)
    with pytest.raises(ValueError):
        parse_format("int8").encode(np.nan)
