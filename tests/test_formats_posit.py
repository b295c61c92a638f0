"""posit(n,es) reference vs SoftPosit's C functions and an exact fractions oracle.

SoftPosit covers posit(8,0), posit(16,1), posit(32,2) and posit(n,2); the oracle covers the rest.
"""
import ctypes
import functools
import os
import subprocess
import time
from fractions import Fraction

import numpy as np
import pytest
import softposit

from forma.errors import SpecError
from forma.sim.formats.posit import PositFormat, Quire, parse_posit

# ----- SoftPosit through ctypes (its posit structs hold one integer: passed as that integer) ------
_SP = ctypes.CDLL(softposit._softposit.__file__)
_UINT = {8: ctypes.c_uint8, 16: ctypes.c_uint16, 32: ctypes.c_uint32}
_NATIVE = {(8, 0): 8, (16, 1): 16, (32, 2): 32}


class _Q16(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint64 * 2)]


class _Q512(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint64 * 8)]


def _fn(name, argtypes, restype):
    f = getattr(_SP, name)
    f.argtypes, f.restype = argtypes, restype
    return f


def softposit_op(fmt, op, *codes):
    """SoftPosit's result codes for op in mul/add/sub/mulAdd, elementwise over int arrays."""
    codes = [np.asarray(c, dtype=np.int64).ravel().tolist() for c in codes]
    if (fmt.n, fmt.es) in _NATIVE:
        bits = _NATIVE[fmt.n, fmt.es]
        f = _fn(f"p{bits}_{op}", [_UINT[bits]] * len(codes), _UINT[bits])
        return np.array([f(*xs) for xs in zip(*codes)], dtype=np.int64)
    assert fmt.es == 2
    sh, u32 = 32 - fmt.n, ctypes.c_uint32
    f = _fn(f"pX2_{op}", [u32] * len(codes) + [ctypes.c_int], u32)
    return np.array([f(*(x << sh for x in xs), fmt.n) >> sh for xs in zip(*codes)], dtype=np.int64)


def softposit_decode(fmt, codes):
    """SoftPosit's float64 value of each code (it reports NaR as inf, or NaN for posit32)."""
    codes = np.asarray(codes, dtype=np.int64).ravel().tolist()
    if (fmt.n, fmt.es) in _NATIVE:
        bits = _NATIVE[fmt.n, fmt.es]
        f = _fn(f"convertP{bits}ToDouble", [_UINT[bits]], ctypes.c_double)
        return np.array([f(c) for c in codes])
    f = _fn("convertPX2ToDouble", [ctypes.c_uint32, ctypes.c_int], ctypes.c_double)
    return np.array([f(c << (32 - fmt.n), fmt.n) for c in codes])


def softposit_encode(fmt, x):
    """SoftPosit's posit codes of float64 values."""
    if (fmt.n, fmt.es) in _NATIVE:
        bits = _NATIVE[fmt.n, fmt.es]
        f = _fn(f"convertDoubleToP{bits}", [ctypes.c_double], _UINT[bits])
        return np.array([f(v) for v in np.ravel(x).tolist()], dtype=np.int64)
    f = _fn("convertDoubleToPX2", [ctypes.c_double, ctypes.c_int], ctypes.c_uint32)
    return np.array([f(v, fmt.n) >> (32 - fmt.n) for v in np.ravel(x).tolist()], dtype=np.int64)


class SoftPositQuire:
    """One SoftPosit quire (q8/q16/q32 for the native formats, qX2 for posit(n,2))."""

    def __init__(self, fmt):
        self.fmt = fmt
        native = _NATIVE.get((fmt.n, fmt.es))
        tag = f"q{native}" if native else "qX2"
        qtype = {8: ctypes.c_uint32, 16: _Q16, 32: _Q512}.get(native, _Q512)
        ptype = _UINT[native] if native else ctypes.c_uint32
        self.shift = 0 if native else 32 - fmt.n
        self._add = _fn(f"{tag}_fdp_add", [qtype, ptype, ptype], qtype)
        self._sub = _fn(f"{tag}_fdp_sub", [qtype, ptype, ptype], qtype)
        extra = [] if native else [ctypes.c_int]
        self._round = _fn(f"{tag}_to_p{native}" if native else "qX2_to_pX2", [qtype] + extra, ptype)
        self._extra = [] if native else [fmt.n]
        self.q = qtype() if qtype is not ctypes.c_uint32 else 0

    def fma(self, a, b, negate=False):
        self.q = (self._sub if negate else self._add)(self.q, int(a) << self.shift, int(b) << self.shift)

    def to_posit(self):
        return self._round(self.q, *self._extra) >> self.shift

    def bits(self):
        if isinstance(self.q, int):
            return self.q
        return sum(int(w) << (64 * (len(self.q.v) - 1 - i)) for i, w in enumerate(self.q.v))


# ----- exact oracle: values read off the bit string with fractions ----------------------------------
@functools.lru_cache(maxsize=None)
def exact_value(code, n, es):
    """Exact value of an n-bit posit code as a Fraction (None for NaR), from its bit string."""
    if code == 0:
        return Fraction(0)
    if code == 1 << (n - 1):
        return None
    negative = code >> (n - 1)
    body = format((-code) % (1 << n) if negative else code, f"0{n}b")[1:]
    run = len(body) - len(body.lstrip(body[0]))
    k = run - 1 if body[0] == "1" else -run
    rest = body[run + 1:]
    e = int((rest[:es] + "0" * es)[:es], 2) if es else 0
    f = rest[es:]
    v = Fraction(2) ** ((k << es) + e) * (1 + (Fraction(int(f, 2), 2 ** len(f)) if f else 0))
    return -v if negative else v


_UP = {  # (compare with the bit-string midpoint, negative, hi is even) -> take the larger magnitude
    "rne": lambda c, neg, even: c > 0 or (c == 0 and even),
    "trunc": lambda c, neg, even: False,
    "away": lambda c, neg, even: True,
    "floor": lambda c, neg, even: neg,
    "ceil": lambda c, neg, even: not neg,
    "half_away": lambda c, neg, even: c >= 0,
    "half_zero": lambda c, neg, even: c > 0,
    "half_up": lambda c, neg, even: c > 0 or (c == 0 and not neg),
    "half_down": lambda c, neg, even: c > 0 or (c == 0 and neg),
}


def exact_round(x, n, es, rounding="rne"):
    """posit(n,es) code of Fraction x (None = NaR) by the standard's rule, in any rounding mode.

    Between neighbours lo < |x| < hi the bit-string midpoint is the (n+1)-bit posit lo·1 (rne: ties
    to the even pattern); magnitudes beyond maxpos / below minpos clamp to them in every mode.
    """
    if x is None:
        return 1 << (n - 1)
    if x == 0:
        return 0
    negative, x = x < 0, abs(x)
    lo, hi = 1, (1 << (n - 1)) - 1
    if x >= exact_value(hi, n, es):
        code = hi
    elif x <= exact_value(lo, n, es):
        code = lo
    else:
        while hi - lo > 1:                      # exact_value(lo) <= x < exact_value(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if exact_value(mid, n, es) <= x else (lo, mid)
        midpoint = exact_value(2 * lo + 1, n + 1, es)
        cmp = (x > midpoint) - (x < midpoint)
        up = x != exact_value(lo, n, es) and _UP[rounding](cmp, negative, hi % 2 == 0)
        code = hi if up else lo
    return (-code) % (1 << n) if negative else code


def exact_op(op, n, es, *codes):
    vals = [exact_value(int(c), n, es) for c in codes]
    if any(v is None for v in vals):
        return 1 << (n - 1)
    a, b = vals[0], vals[1]
    x = {"mul": lambda: a * b, "add": lambda: a + b, "sub": lambda: a - b,
         "fma": lambda: a * b + vals[2]}[op]()
    return exact_round(x, n, es)


def oracle_op(fmt, op, *codes):
    return np.array([exact_op(op, fmt.n, fmt.es, *xs) for xs in zip(*(np.ravel(c) for c in codes))])


# ----- reporting --------------------------------------------------------------------------------------
def assert_same(fmt, what, inputs, ours, ref, oracle, seed):
    """Assert equal codes; on failure name the first mismatching vector and how to reproduce it."""
    ours, ref = np.ravel(ours).astype(np.int64), np.ravel(ref).astype(np.int64)
    bad = np.flatnonzero(ours != ref)
    if bad.size:
        i = bad[0]
        args = ", ".join(f"{int(np.ravel(x)[i]):#x}" for x in inputs)
        vals = ", ".join(str(fmt.decode(int(np.ravel(x)[i]))) for x in inputs)
        node = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        pytest.fail(f"{fmt.name} {what}({args}) [= {what}({vals})]: ours {ours[i]:#x} "
                    f"({fmt.decode(ours[i])}), {oracle} {ref[i]:#x} ({fmt.decode(ref[i])}); "
                    f"{bad.size} of {ours.size} differ; seed {seed}; reproduce: "
                    f"FORMA_SEED={seed} .venv/bin/pytest '{node}'")


def corner_codes(fmt):
    """Zero, NaR, +-maxpos, +-minpos, their neighbours, +-1 and its neighbours, powers of useed."""
    n, one = fmt.n, 1 << (fmt.n - 2)
    pos = {0, 1, 2, 3, one - 1, one, one + 1, fmt.maxpos_code, fmt.maxpos_code - 1,
           fmt.maxpos_code - 2, int(fmt.encode(fmt.useed)), int(fmt.encode(1.0 / fmt.useed)),
           int(fmt.encode(1.5)), int(fmt.encode(0.75))}
    pos = {c % (1 << n) for c in pos}
    codes = sorted(pos | {(-c) % (1 << n) for c in pos} | {fmt.nar_code})
    return np.array(codes, dtype=np.int64)


def all_pairs(fmt):
    c = np.arange(1 << fmt.n, dtype=np.int64)
    return np.repeat(c, c.size), np.tile(c, c.size)


def random_codes(fmt, rng, size):
    return rng.integers(0, 1 << fmt.n, size, dtype=np.int64)


# ----- SoftPosit: decode and encode ---------------------------------------------------------------
DECODE_FORMATS = [(8, 0), (16, 1), (32, 2)] + [(n, 2) for n in (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 31)]


@pytest.mark.parametrize("n,es", DECODE_FORMATS)
def test_decode_matches_softposit(n, es, seed):
    fmt = PositFormat(n, es)
    codes = np.arange(1 << n) if n <= 16 else random_codes(fmt, np.random.default_rng(seed), 100_000)
    codes = np.concatenate([codes, corner_codes(fmt)])
    ours, ref = fmt.decode(codes), softposit_decode(fmt, codes)
    nar = codes == fmt.nar_code
    assert np.all(np.isnan(ours[nar])) and not np.any(np.isfinite(ref[nar]))
    bad = np.flatnonzero(ours[~nar] != ref[~nar])
    assert not bad.size, (f"{fmt.name} decode({codes[~nar][bad[0]]:#x}): ours {ours[~nar][bad[0]]!r}, "
                          f"SoftPosit {ref[~nar][bad[0]]!r}; seed {seed}")


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1), (32, 2), (5, 2), (10, 2), (20, 2), (24, 2)])
def test_encode_matches_softposit(n, es, seed):
    """Random doubles over the whole range, every bit-string midpoint (ties) and specials."""
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(20_000) * np.exp2(rng.integers(-fmt.max_scale - 8, fmt.max_scale + 8, 20_000))
    lo = random_codes(fmt, rng, 4000) & fmt.maxpos_code
    ties = np.array([float(exact_value(2 * int(c) + 1, n + 1, es)) for c in lo[lo < fmt.maxpos_code]])
    x = np.concatenate([x, ties, -ties, [0.0, -0.0, 1e300, -1e300, 1e-300, -1e-300, np.nan]])
    ours = fmt.encode(x)
    assert_same(fmt, "encode", [x.view(np.int64)], ours, softposit_encode(fmt, x), "SoftPosit", seed)
    assert fmt.encode(np.inf) == fmt.nar_code and fmt.encode(-np.inf, saturate=True) == fmt.nar_code + 1


# ----- SoftPosit: arithmetic ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["mul", "add", "sub"])
@pytest.mark.parametrize("n,es", [(8, 0)] + [(n, 2) for n in (2, 3, 4, 5, 6, 7, 8)])
def test_all_pairs_match_softposit(n, es, op, seed):
    fmt = PositFormat(n, es)
    a, b = all_pairs(fmt)
    assert_same(fmt, op, [a, b], getattr(fmt, op)(a, b), softposit_op(fmt, op, a, b), "SoftPosit", seed)


def hard_cases(fmt, rng):
    """Corner pairs, cancellations, huge scale gaps and (for n < 32) exact ties of add and mul."""
    n, c = fmt.n, corner_codes(fmt)
    x = random_codes(fmt, rng, 20_000)
    near = fmt.neg((x + rng.integers(-3, 4, x.size)) % (1 << n))             # cancellation
    tiny = rng.integers(1, 64, x.size) * rng.choice([1, -1], x.size)
    huge = (fmt.maxpos_code - rng.integers(0, 64, x.size)) * rng.choice([1, -1], x.size)
    a = [np.repeat(c, c.size), x, x, x, tiny]
    b = [np.tile(c, c.size), near, tiny, huge, x]
    if n < 32:
        wide = PositFormat(n + 1, fmt.es)                  # its odd codes are the midpoints
        pos = x & fmt.maxpos_code
        pos = pos[(pos > 0) & (pos < fmt.maxpos_code)]
        mid = wide.decode(2 * pos + 1)
        half = fmt.encode(mid - fmt.decode(pos))           # exact difference: neighbours
        ok = fmt.decode(half) == mid - fmt.decode(pos)
        ubits = max(fmt.frac_bits - 4, 4)                  # products just past the precision
        u = fmt.encode(rng.integers(1, 1 << ubits, 100_000) * np.exp2(rng.integers(-12, 12, 100_000)))
        v = fmt.encode(rng.integers(1, 1 << 6, 100_000) * np.exp2(rng.integers(-12, 12, 100_000)))
        p = fmt.decode(u) * fmt.decode(v)                  # exact: at most 33 significant bits
        w = wide.encode(p)
        tie = (w % 2 == 1) & (wide.decode(w) == p)
        assert ok.sum() > 1000 and tie.sum() > 1000
        a += [pos[ok], u[tie]]
        b += [half[ok], v[tie]]
    return np.concatenate(a) % (1 << n), np.concatenate(b) % (1 << n)


@pytest.mark.parametrize("op", ["mul", "add"])
def test_posit16_million_random_pairs_match_softposit(op, seed):
    """posit(16,1): 1M seeded random pairs plus every corner class."""
    fmt = PositFormat(16, 1)
    rng = np.random.default_rng(seed)
    ca, cb = hard_cases(fmt, rng)
    a = np.concatenate([random_codes(fmt, rng, 1_000_000), ca])
    b = np.concatenate([random_codes(fmt, rng, 1_000_000), cb])
    assert_same(fmt, op, [a, b], getattr(fmt, op)(a, b), softposit_op(fmt, op, a, b), "SoftPosit", seed)


@pytest.mark.parametrize("op", ["mul", "add", "sub"])
@pytest.mark.parametrize("n,es", [(16, 1), (32, 2), (10, 2), (12, 2), (20, 2), (24, 2), (31, 2)])
def test_random_pairs_match_softposit(n, es, op, seed):
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    ca, cb = hard_cases(fmt, rng) if n >= 10 else (corner_codes(fmt),) * 2
    a = np.concatenate([random_codes(fmt, rng, 60_000), ca])
    b = np.concatenate([random_codes(fmt, rng, 60_000), cb])
    assert_same(fmt, op, [a, b], getattr(fmt, op)(a, b), softposit_op(fmt, op, a, b), "SoftPosit", seed)


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1)])
def test_fma_matches_softposit(n, es, seed):
    """a*b+c with one rounding; a third of the cases cancel a*b against c."""
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    a, b, c = (random_codes(fmt, rng, 200_000) for _ in range(3))
    c[::3] = fmt.neg(fmt.mul(a[::3], b[::3]))
    c[1::3] = fmt.neg((fmt.mul(a[1::3], b[1::3]).astype(np.int64) + 1) % (1 << n))
    assert_same(fmt, "fma", [a, b, c], fmt.fma(a, b, c), softposit_op(fmt, "mulAdd", a, b, c),
                "SoftPosit", seed)


def test_fma_posit32_matches_oracle_where_softposit_differs(seed):
    """SoftPosit's p32_mulAdd is off by one ulp on some cancellations; the exact oracle decides."""
    fmt = PositFormat(32, 2)
    rng = np.random.default_rng(seed)
    a, b, c = (random_codes(fmt, rng, 20_000) for _ in range(3))
    c[::2] = fmt.neg(fmt.mul(a[::2], b[::2]))
    ours, ref = fmt.fma(a, b, c), softposit_op(fmt, "mulAdd", a, b, c)
    check = np.flatnonzero(ours != ref)
    check = np.concatenate([check, np.arange(300)])
    exact = oracle_op(fmt, "fma", a[check], b[check], c[check])
    assert_same(fmt, "fma", [a[check], b[check], c[check]], ours[check], exact, "exact oracle", seed)


# ----- exact oracle: formats no library covers -----------------------------------------------------
SMALL_UNCOVERED = [(n, es) for n in range(2, 9) for es in (0, 1, 3, 4) if (n, es) != (8, 0)]


@pytest.mark.parametrize("n,es", SMALL_UNCOVERED)
def test_small_formats_all_pairs_match_exact_oracle(n, es, seed):
    fmt = PositFormat(n, es)
    a, b = all_pairs(fmt)
    for op in ("mul", "add"):
        assert_same(fmt, op, [a, b], getattr(fmt, op)(a, b), oracle_op(fmt, op, a, b), "exact oracle", seed)
    codes = np.arange(1 << n)
    exact = [exact_value(int(c), n, es) for c in codes]
    assert all(v is None and np.isnan(d) or d == v for d, v in zip(fmt.decode(codes), exact))


@pytest.mark.parametrize("n,es", [(6, 1), (10, 1), (4, 1), (16, 3), (32, 4), (32, 0), (16, 0), (12, 0),
                                  (24, 3), (20, 4), (10, 0), (31, 1), (9, 4)])
def test_spot_checks_match_exact_oracle(n, es, seed):
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    c = corner_codes(fmt)
    a = np.concatenate([random_codes(fmt, rng, 1500), np.repeat(c, c.size)])
    b = np.concatenate([random_codes(fmt, rng, 1500), np.tile(c, c.size)])
    b[:300] = fmt.neg((a[:300] + rng.integers(-2, 3, 300)) % (1 << n))       # cancellation
    for op in ("mul", "add", "sub"):
        assert_same(fmt, op, [a, b], getattr(fmt, op)(a, b), oracle_op(fmt, op, a, b), "exact oracle", seed)
    d = random_codes(fmt, rng, a.size)
    d[::2] = fmt.neg(fmt.mul(a[::2], b[::2]))
    assert_same(fmt, "fma", [a, b, d], fmt.fma(a, b, d), oracle_op(fmt, "fma", a, b, d), "exact oracle", seed)
    values = [exact_value(int(x), n, es) for x in a]
    assert all(v is None and np.isnan(f) or Fraction(f) == v for f, v in zip(fmt.decode(a), values)), \
        f"{fmt.name} decode differs from the exact oracle; seed {seed}"


@pytest.mark.parametrize("es", range(5))
@pytest.mark.parametrize("n", range(2, 17))
def test_encode_decode_round_trip(n, es):
    """Every code survives decode then encode (decode is exact in float64 for n <= 32, es <= 4)."""
    fmt = PositFormat(n, es)
    codes = np.arange(1 << n)
    assert np.array_equal(fmt.encode(fmt.decode(codes)), codes)


def test_extreme_codes_decode_exactly():
    for n in (24, 28, 31, 32):
        for es in range(5):
            fmt = PositFormat(n, es)
            codes = np.concatenate([np.arange(1, 300), fmt.maxpos_code - np.arange(300),
                                    (1 << (n - 2)) + np.arange(300), 1 << n - 1 - np.arange(1, n - 1)])
            got = fmt.decode(codes)
            assert all(Fraction(g) == exact_value(int(c), n, es) for g, c in zip(got, codes)), fmt.name


# ----- other rounding modes ------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", sorted(_UP))
@pytest.mark.parametrize("n,es", [(10, 1), (8, 3), (6, 0)])
def test_rounding_modes_match_exact_oracle(n, es, rounding, seed):
    """Random doubles, every bit-string midpoint (ties) and values beyond maxpos / below minpos."""
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(1500) * np.exp2(rng.integers(-fmt.max_scale - 4, fmt.max_scale + 4, 1500))
    ties = PositFormat(n + 1, es).decode(np.arange(1, 1 << n, 2))
    x = np.concatenate([x, ties, -ties])
    want = [exact_round(Fraction(v), n, es, rounding) for v in x]
    assert_same(fmt, f"encode_{rounding}", [x.view(np.int64)], fmt.encode(x, rounding=rounding), want,
                "exact oracle", seed)
    assert fmt.encode(1e-300, rounding=rounding) == 1 and fmt.encode(-1e300, rounding=rounding) == fmt.nar_code + 1


def test_stochastic_rounding_is_seeded_and_unbiased():
    fmt = PositFormat(8, 1)
    x = np.full(200_000, 1.0 + 2 ** -6)               # 1/4 of the way from 1 to 1 + 2**-4
    first = fmt.encode(x, rounding="stochastic", seed=7)
    assert np.array_equal(first, fmt.encode(x, rounding="stochastic", seed=7))
    assert set(np.unique(first).tolist()) == {int(fmt.encode(1.0)), int(fmt.encode(1 + 2 ** -4))}
    up = np.mean(first == fmt.encode(1 + 2 ** -4))
    assert abs(up - 0.25) < 0.005, up
    exact = fmt.decode(np.arange(256))
    exact = exact[np.isfinite(exact)]
    assert np.array_equal(fmt.encode(exact, rounding="stochastic", seed=1), fmt.encode(exact))


# ----- format object, parsing and bad input ----------------------------------------------------------
def test_format_object():
    fmt = parse_posit(" posit( 16 , 1 ) ")
    assert fmt == PositFormat(16, 1) and hash(fmt) == hash(PositFormat(16, 1))
    assert fmt.name == "posit(16,1)" and str(fmt) == "posit(16,1)" and fmt.family == "posit"
    assert fmt.bits == 16 and fmt.code_dtype == np.uint16 and PositFormat(8, 0).code_dtype == np.uint8
    assert PositFormat(32, 4).code_dtype == np.uint32
    assert parse_posit("posit16_1") == fmt and parse_posit("POSIT8_0") == PositFormat(8, 0)
    assert parse_posit("int8") is None and parse_posit("fp8_e4m3") is None
    assert fmt.useed == 4 and fmt.max_scale == 28 and fmt.maxpos == 2.0 ** 28 and fmt.minpos == 2.0 ** -28
    assert fmt.decode(fmt.maxpos_code) == fmt.maxpos and fmt.decode(fmt.minpos_code) == fmt.minpos
    assert fmt.frac_bits == 12 and PositFormat(4, 3).frac_bits == 0
    assert [PositFormat(n, 2).quire_bits for n in (8, 16, 32)] == [128, 256, 512]
    assert PositFormat(16, 1).quire_width(carry_bits=14) == 128 and PositFormat(8, 0).quire_width(6) == 32
    assert fmt.neg(0) == 0 and fmt.neg(fmt.nar_code) == fmt.nar_code and fmt.neg(1) == 0xFFFF


@pytest.mark.parametrize("text,message", [
    ("posit(3,5)", "posit(3,5): es must be in 0..4."),
    ("posit(1,0)", "posit(1,0): n must be in 2..32."),
    ("posit(33,2)", "posit(33,2): n must be in 2..32."),
    ("posit(8.5,1)", "posit(8.5,1): n must be an integer, got '8.5'."),
    ("posit(8,x)", "posit(8,x): es must be an integer, got 'x'."),
    ("posit(8)", "posit(8): write posit(n,es) with integers n in 2..32 and es in 0..4."),
    ("posit16", "posit16: write posit(n,es) with integers n in 2..32 and es in 0..4."),
    ("posit40_2", "posit(40,2): n must be in 2..32."),
])
def test_parse_rejects_bad_posits(text, message):
    with pytest.raises(SpecError) as err:
        parse_posit(text)
    assert str(err.value) == message


def test_bad_parameters_and_codes():
    with pytest.raises(SpecError, match="n must be in 2..32"):
        PositFormat(1, 0)
    with pytest.raises(SpecError, match="es must be an integer"):
        PositFormat(8, 1.0)
    fmt = PositFormat(8, 0)
    for bad in ([256], [-1], [1.5], np.array([3.0, 2.5])):
        with pytest.raises(ValueError):
            fmt.mul(bad, 1)
    with pytest.raises(ValueError, match="outside"):
        PositFormat(16, 1).add(np.array([70000]), 1)
    with pytest.raises(SpecError, match="rounding"):
        fmt.encode(1.0, rounding="nearest")
    with pytest.raises(SpecError, match="carry_bits"):
        fmt.quire_width(-1)


# ----- quire -----------------------------------------------------------------------------------------------
QUIRE_FORMATS = [((8, 0), 6), ((16, 1), 14), ((32, 2), 30)] + [((n, 2), None) for n in (5, 8, 12, 20, 32)]


def dot_vectors(fmt, rng, rows, length):
    """Random products with NaR removed; every other row repeats its products negated (cancels)."""
    a = random_codes(fmt, rng, (rows, length))
    b = random_codes(fmt, rng, (rows, length))
    a[a == fmt.nar_code] = 0
    b[b == fmt.nar_code] = 0
    half = length // 2
    a[::2, half:2 * half] = a[::2, :half]
    b[::2, half:2 * half] = fmt.neg(b[::2, :half])
    return a, b


@pytest.mark.parametrize("nes,carry", QUIRE_FORMATS)
def test_quire_matches_softposit(nes, carry, seed):
    """Incremental q += a*b / q -= a*b and the final rounding; register bits for q8/q16/q32."""
    fmt = PositFormat(*nes)
    rng = np.random.default_rng(seed)
    a, b = dot_vectors(fmt, rng, 120, 24)
    a[:, -1] = np.where(rng.random(a.shape[0]) < 0.5, 1, a[:, -1])   # tiny last terms: rounding
    ours = Quire(fmt, (a.shape[0],), carry if carry is not None else 30)
    for row in range(a.shape[0]):
        ref = SoftPositQuire(fmt)
        for k in range(a.shape[1]):
            ref.fma(a[row, k], b[row, k], negate=k % 5 == 4)
        mine = Quire(fmt, (), carry if carry is not None else 30)
        for k in range(a.shape[1]):
            (mine.fms if k % 5 == 4 else mine.fma)(a[row, k], b[row, k])
        assert int(mine.to_posit()) == ref.to_posit(), (
            f"{fmt.name} quire row {row}: a={a[row].tolist()} b={b[row].tolist()}; seed {seed}")
        if carry is not None:
            assert int(mine.to_bits()) == ref.bits(), f"{fmt.name} quire bits row {row}; seed {seed}"
    sign = np.where(np.arange(a.shape[1]) % 5 == 4, fmt.neg(b), b)
    for k in range(a.shape[1]):
        ours.fma(a[:, k], sign[:, k])
    assert np.array_equal(ours.to_posit(), fmt.quire_dot(a, sign))


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1), (32, 2), (6, 1), (16, 3), (32, 4), (7, 0)])
def test_quire_dot_matches_exact_oracle(n, es, seed):
    fmt = PositFormat(n, es)
    rng = np.random.default_rng(seed)
    a, b = dot_vectors(fmt, rng, 40, 33)
    got = fmt.quire_dot(a, b)
    for row in range(a.shape[0]):
        exact = sum(exact_value(int(x), n, es) * exact_value(int(y), n, es) for x, y in zip(a[row], b[row]))
        assert got[row] == exact_round(exact, n, es), f"{fmt.name} quire_dot row {row}; seed {seed}"


def test_quire_nar_overflow_and_clear():
    fmt = PositFormat(8, 0)
    big = fmt.maxpos_code
    q = Quire(fmt, carry_bits=0)
    q.fma(big, big)
    assert q.to_posit() == big and not q.nar
    q.fma(big, big)
    assert q.nar and q.to_posit() == fmt.nar_code and q.to_bits() == 1 << (q.width - 1)
    q.fms(1, 1)
    assert q.nar                               # NaR stays until cleared
    q.clear()
    assert q.to_posit() == 0 and q.to_bits() == 0
    q.fma(fmt.nar_code, 0)
    assert q.nar
    # Default width: 2**31 - 1 products of maxpos**2 fit, the next one overflows.
    for f in (PositFormat(8, 0), PositFormat(16, 2), PositFormat(32, 4)):
        q = Quire(f)
        maxsq = 1 << (2 * f.max_scale + f.quire_frac_bits)
        q.value = np.asarray((2 ** 31 - 2) * maxsq, dtype=object)
        q.fma(f.maxpos_code, f.maxpos_code)
        assert not q.nar and q.to_posit() == f.maxpos_code
        q.fma(f.maxpos_code, f.maxpos_code)
        assert q.nar
    assert fmt.quire_dot([fmt.nar_code, 1], [1, 1]) == fmt.nar_code
    assert fmt.quire_dot(np.zeros((3, 0), int), np.zeros((3, 0), int)).tolist() == [0, 0, 0]
    q = Quire(fmt, (2, 3))
    q.fma([[64, 1, 2], [3, 4, 5]], 64)
    with pytest.raises(ValueError, match="shape"):
        q.fma(np.ones((4, 3), int), 1)
    q.add(fmt.encode([[1.0], [-1.0]]))
    a = np.stack([[[64, 1, 2], [3, 4, 5]], np.full((2, 3), 64)], axis=-1)
    b = np.stack([np.full((2, 3), 64), np.repeat(fmt.encode([[1.0], [-1.0]]), 3, axis=1)], axis=-1)
    assert np.array_equal(q.to_posit(), fmt.quire_dot(a, b))


# ----- opt-in exhaustive posit(16,1) multiply ------------------------------------------------------
_SHIM = r"""
#include <stdint.h>
uint16_t p16_mul(uint16_t a, uint16_t b);
void p16_mul_rows(uint32_t first_a, uint32_t rows, uint16_t *out) {
    for (uint32_t i = 0; i < rows; i++)
        for (uint32_t b = 0; b < 65536; b++)
            out[(uint64_t)i * 65536 + b] = p16_mul((uint16_t)(first_a + i), (uint16_t)b);
}
"""


@pytest.mark.bench
def test_posit16_all_pairs_mul_match_softposit(tmp_path):
    """All 2**32 posit(16,1) products vs SoftPosit's C p16_mul, 256 rows of a at a time."""
    src, lib = tmp_path / "shim.c", tmp_path / "shim.so"
    src.write_text(_SHIM)
    so = softposit._softposit.__file__
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(src), so, "-o", str(lib),
                    f"-Wl,-rpath,{os.path.dirname(so)}"], check=True)
    shim = ctypes.CDLL(str(lib))
    fmt, rows = PositFormat(16, 1), 256
    b = np.tile(np.arange(65536, dtype=np.uint16), rows)
    ref = np.empty(rows * 65536, dtype=np.uint16)
    limit = int(os.environ.get("FORMA_POSIT16_ROWS", "65536"))
    start = time.perf_counter()
    for first in range(0, limit, rows):
        shim.p16_mul_rows(first, rows, ref.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)))
        a = np.repeat(np.arange(first, first + rows, dtype=np.uint16), 65536)
        assert_same(fmt, "mul", [a, b], fmt.mul(a, b), ref, "SoftPosit", 0)
    print(f"posit(16,1) mul: {limit * 65536} pairs in {time.perf_counter() - start:.1f} s")
