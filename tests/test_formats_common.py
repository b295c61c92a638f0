"""convert and dot across families vs Fractions; the interface every family shares."""

import numpy as np
import pytest

from forma.sim.formats import FixedFormat, FloatFormat, convert, dot, exact, parse_format

SEED = 20261122


def frac(fmt, code):
    return exact.value(fmt, int(code))


@pytest.mark.parametrize("src, dst", [("float8_e4m3fn", "float4_e2m1fn"), ("bfloat16", "float8_e5m2"),
                                      ("float16", "fixed<8,3,RND_CONV,SAT>"), ("int8", "float8_e4m3fn"),
                                      ("fixed<16,6>", "bfloat16"), ("float8_e5m2", "int4")])
def test_convert_vs_exact(src, dst):
    s, d = parse_format(src), parse_format(dst)
    rng = np.random.default_rng(SEED)
    c = s.all_codes() if s.bits <= 8 else rng.integers(0, 1 << s.bits, 3000).astype(s.code_dtype)
    v = s.decode(c)
    c = c[np.isfinite(v)]
    kw = {"saturate": True} if d.family in ("int", "fixed") else {}
    got = convert(c, s, d, **kw)
    want = [exact.round_value(d, frac(s, x), saturate=kw.get("saturate")) for x in c]
    gv, wv = d.decode(got), d.decode(np.array(want, dtype=d.code_dtype))
    assert np.array_equal(gv, wv, equal_nan=True), f"{src}->{dst} seed={SEED}"


@pytest.mark.parametrize("a_fmt, b_fmt, out_fmt", [("float8_e5m2", "float8_e5m2", "float16"),
                                                    ("float8_e4m3fn", "float4_e2m1fn", "bfloat16"),
                                                    ("int8", "int8", "int32"),
                                                    ("bfloat16", "bfloat16", "bfloat16"),
                                                    ("float16", "float8_e4m3fn", "float16"),
                                                    ("fixed<8,3>", "int4", "fixed<24,10,RND_CONV,SAT>")])
def test_dot_exact_vs_fractions(a_fmt, b_fmt, out_fmt):
    """Kulisch dot: the exact sum of exact products, rounded once (wide spans included)."""
    fa, fb, fo = (parse_format(x) for x in (a_fmt, b_fmt, out_fmt))
    rng = np.random.default_rng(SEED)
    n, k = 60, 64
    a = rng.integers(0, 1 << fa.bits, (n, k)).astype(fa.code_dtype)
    b = rng.integers(0, 1 << fb.bits, (n, k)).astype(fb.code_dtype)
    a = np.where(np.isfinite(fa.decode(a)), a, 0).astype(fa.code_dtype)
    b = np.where(np.isfinite(fb.decode(b)), b, 0).astype(fb.code_dtype)
    b[0] = fb.encode(-fa.decode(a[0]) * 0 + fb.decode(b[0]))      # keep a row unchanged
    got = dot(a, b, fa, fb, fo)
    for i in range(n):
        s = sum(frac(fa, x) * frac(fb, y) for x, y in zip(a[i], b[i]))
        want = exact.round_value(fo, s)
        assert fo.decode(got[i:i + 1])[0] == fo.decode(np.array([want], dtype=fo.code_dtype))[0], (i, SEED)


def test_dot_exact_beats_float64():
    """2**15 * 2**15 + 2**-16 * 2**-16 - 2**30: float64 sums lose the tiny term; exact keeps it."""
    f = parse_format("float8_e5m2")
    a = f.encode(np.array([2.0 ** 15, 2.0 ** -16, -2.0 ** 15]))
    b = f.encode(np.array([2.0 ** 15, 2.0 ** -16, 2.0 ** 15]))
    out = parse_format("float32")
    assert out.decode(dot(a, b, f, f, out)) == np.float32(2.0 ** -32)


def test_dot_sequential_rounds_each_step():
    f = parse_format("float8_e4m3fn")
    a = f.encode(np.array([1.0, 2.0 ** -5, 2.0 ** -5]))
    b = f.encode(np.array([1.0, 1.0, 1.0]))
    # exact: 1 + 2**-4 = 1.0625 -> e4m3 1.0 (tie to even) ; sequential: 1 + 2**-5 -> 1.0 twice -> 1.0
    assert f.decode(dot(a, b, f, f, f)) == 1.0
    assert parse_format("float16").decode(dot(a, b, f, f, "float16", accumulate="sequential", acc_fmt=f)) == 1.0
    assert f.decode(f.encode(1.0625)) == 1.0
    assert parse_format("float16").decode(dot(a, b, f, f, "float16")) == 1.0625


def test_dot_specials():
    f = parse_format("float8_e5m2")
    inf, zero, one = f.encode(np.array([np.inf, 0.0, 1.0]))
    assert np.isnan(f.decode(dot(np.array([inf, one]), np.array([zero, one]), f, f, f)))
    assert f.decode(dot(np.array([inf, one]), np.array([one, one]), f, f, f)) == np.inf


def test_interface_shared():
    for name in ("int8", "fixed<8,3>", "float8_e4m3fn", "mxfp4"):
        f = parse_format(name)
        assert f.code_dtype == np.uint8 and f.family in ("int", "fixed", "float", "mx")
        with pytest.raises(ValueError):
            f.check_codes([1 << f.bits])
    assert isinstance(parse_format("int8"), FixedFormat) and isinstance(parse_format("bfloat16"), FloatFormat)
    assert parse_format("bfloat16").code_dtype == np.uint16 and parse_format("float32").code_dtype == np.uint32
