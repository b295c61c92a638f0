"""The number-format interface every family implements, plus the shared exact rounding helpers.

Codes are unsigned bit patterns in the smallest numpy uint dtype; values are float64 (exact).
"""
from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError

#: Rounding modes understood by every family (fixed point also takes the ap_fixed names).
#: Directions are for the exact value; "half_*" modes differ only on exact ties.
ROUNDING_MODES = (
    "rne",         # nearest, ties to even
    "trunc",       # toward zero
    "floor",       # toward -inf
    "ceil",        # toward +inf
    "away",        # away from zero
    "half_away",   # nearest, ties away from zero
    "half_zero",   # nearest, ties toward zero
    "half_up",     # nearest, ties toward +inf
    "half_down",   # nearest, ties toward -inf
    "stochastic",  # up with probability (remainder / step), numpy Generator seeded by `seed`
)


def code_dtype_for(bits: int) -> np.dtype:
    """Smallest of uint8/16/32/64 holding `bits` bits."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    raise SpecError(f"{bits}-bit codes: widths must be in [1, 64]")


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDING_MODES:
        raise SpecError(f"rounding mode {rounding!r}: must be one of {', '.join(ROUNDING_MODES)}")
    return rounding


def round_up_decision(rem_cmp, exact, negative, odd, rounding, rng=None, frac=None):
    """Whether to step the magnitude up from the truncated value (numpy bool array).

    rem_cmp: sign of (remainder - half step) (-1, 0, +1); exact: remainder == 0;
    negative: value < 0; odd: truncated code/integer is odd; frac: remainder/step in [0,1)
    (stochastic only). Works on magnitudes (sign-magnitude view) for every family.
    """
    inexact = ~np.asarray(exact, dtype=bool)
    return inexact & _up_if_inexact(rem_cmp, negative, odd, rounding, rng, frac)


def _up_if_inexact(rem_cmp, negative, odd, rounding, rng, frac):
    inexact = np.ones(np.shape(rem_cmp), dtype=bool)
    if rounding == "rne":
        return (rem_cmp > 0) | ((rem_cmp == 0) & odd)
    if rounding == "trunc":
        return np.zeros_like(inexact)
    if rounding == "away":
        return inexact
    if rounding == "floor":
        return inexact & negative
    if rounding == "ceil":
        return inexact & ~negative
    if rounding == "half_away":
        return rem_cmp >= 0
    if rounding == "half_zero":
        return rem_cmp > 0
    if rounding == "half_up":
        return (rem_cmp > 0) | ((rem_cmp == 0) & ~negative)
    if rounding == "half_down":
        return (rem_cmp > 0) | ((rem_cmp == 0) & negative)
    if rounding == "stochastic":
        u = rng.random(np.shape(frac))
        return u < frac
    raise SpecError(f"rounding mode {rounding!r}: must be one of {', '.join(ROUNDING_MODES)}")


def round_shift(m, s, rounding: str = "rne", rng=None):
    """Exact integer m / 2**s rounded to an integer by `rounding` (s >= 0, broadcast).

    m: int64 (|m| < 2**62) or object (Python int) array; the result has m's kind. Every
    mode of ROUNDING_MODES is exact; "stochastic" rounds up with probability remainder/2**s.
    """
    m, s = np.broadcast_arrays(np.asarray(m), np.asarray(s))
    if np.any(s < 0):
        raise ValueError("round_shift: shift must be >= 0")
    if m.dtype != object:
        m = m.astype(np.int64)
        big = s > 62  # beyond 62 bits of shift only the sign of m matters (|m| < 2**62)
        m = np.where(big, np.sign(m), m)
        s = np.where(big, 62, s).astype(np.int64)
        one = np.left_shift(np.int64(1), s)
    else:
        s = s.astype(object)
        one = np.left_shift(np.ones(s.shape, dtype=object), s)
    negative = m < 0
    a = np.where(negative, -m, m)
    q = a >> s
    r = a - (q << s)
    half = one >> 1
    rem_cmp = (r > half).astype(np.int8) - (r < half).astype(np.int8)
    exact = (r == 0).astype(bool)
    if rounding == "stochastic":
        frac = np.asarray(r, dtype=np.float64) / np.asarray(one, dtype=np.float64)
    else:
        frac = None
    up = round_up_decision(rem_cmp, exact, negative, (q & 1) == 1, rounding, rng, frac)
    q = q + up.astype(np.int64) if m.dtype != object else q + up.astype(object)
    return np.where(negative, -q, q)


def f64_to_scaled(x):
    """Finite float64 array -> (int64 odd-or-zero mantissa, int64 exponent), x = m * 2**e exactly."""
    x = np.asarray(x, dtype=np.float64)
    f, e = np.frexp(x)
    m = (f * 2.0**53).astype(np.int64)
    e = e.astype(np.int64) - 53
    tz = trailing_zeros(m)
    m = m >> tz
    e = np.where(m == 0, 0, e + tz)
    return m, e


def trailing_zeros(m):
    """Trailing zero bits of each int64 (0 for m == 0)."""
    m = np.asarray(m, dtype=np.int64)
    low = m & -m
    low = np.where(low == 0, 1, low)
    return np.round(np.log2(np.abs(low.astype(np.float64)))).astype(np.int64)


def bit_length(m) -> int:
    """Largest bit length of |m| over an int64/object array (0 for an empty array)."""
    m = np.asarray(m)
    if m.size == 0:
        return 0
    if m.dtype == object:
        return max(abs(int(v)).bit_length() for v in m.ravel())
    return int(max(abs(int(m.max())), abs(int(m.min())))).bit_length()


def _int_to_f64_odd(m: int, e: int) -> float:
    """m * 2**e rounded to 53 bits with round-to-odd (sticky LSB); exact when it fits."""
    n = abs(m).bit_length()
    if n > 53:
        sh = n - 53
        hi = abs(m) >> sh
        if abs(m) & ((1 << sh) - 1):
            hi |= 1
        m, e = (hi if m > 0 else -hi), e + sh
    try:
        return math.ldexp(float(m), e)
    except OverflowError:
        return math.copysign(math.inf, m)


def scaled_to_f64_odd(m, e):
    """Exact (mantissa, exponent) arrays -> float64 rounded to odd (53 bits, sticky).

    Rounding the result again to any format with <= 51-bit precision (and range inside
    float64's normal range) gives the correctly rounded result of the exact value in every
    rounding mode except "stochastic" (whose probabilities are then approximate).
    """
    m = np.asarray(m)
    e = np.asarray(e)
    m, e = np.broadcast_arrays(m, e)
    if m.dtype != object and bit_length(m) <= 53:
        return np.ldexp(m.astype(np.float64), e.astype(np.int64))
    flat = [_int_to_f64_odd(int(a), int(b)) for a, b in zip(m.ravel(), e.ravel())]
    return np.array(flat, dtype=np.float64).reshape(m.shape)


def add_scaled(m1, e1, m2, e2):
    """Exact sum of m1*2**e1 + m2*2**e2 -> (mantissa int64/object array, exponent array)."""
    m1, e1, m2, e2 = np.broadcast_arrays(*(np.asarray(v) for v in (m1, e1, m2, e2)))
    e = np.minimum(e1, e2)
    s1, s2 = (e1 - e), (e2 - e)
    span = int(np.max(np.maximum(s1, s2), initial=0))
    if m1.dtype != object and m2.dtype != object and \
            max(bit_length(m1), bit_length(m2)) + span <= 61:
        return (m1.astype(np.int64) << s1.astype(np.int64)) + \
               (m2.astype(np.int64) << s2.astype(np.int64)), e
    o = lambda a: np.asarray(a).astype(object)  # noqa: E731
    return (o(m1) << o(s1)) + (o(m2) << o(s2)), e


def mul_scaled(m1, e1, m2, e2):
    """Exact product of two (mantissa, exponent) arrays."""
    if m1.dtype == object or m2.dtype == object or bit_length(m1) + bit_length(m2) > 62:
        return np.asarray(m1).astype(object) * np.asarray(m2).astype(object), e1 + e2
    return m1.astype(np.int64) * m2.astype(np.int64), e1 + e2


@dataclass(frozen=True)
class NumberFormat(ABC):
    """A number format: bit patterns ("codes") <-> exact values, and its arithmetic.

    Subclasses are frozen dataclasses (hashable, == by value). `name` round-trips through
    `parse_format`. All arithmetic takes and returns codes and broadcasts like numpy.
    """

    family = "abstract"

    # Subclasses provide: name (canonical str), bits (int), family (str).

    @property
    def code_dtype(self) -> np.dtype:
        return code_dtype_for(self.bits)

    def __str__(self) -> str:
        return self.name

    # --- codes ----------------------------------------------------------------------
    def valid_code_mask(self, codes: np.ndarray) -> np.ndarray:
        """Which in-range bit patterns are codes of this format (all, unless overridden)."""
        return np.ones(np.shape(codes), dtype=bool)

    def check_codes(self, codes) -> np.ndarray:
        """Codes as an array of `code_dtype`; ValueError if any is non-integer or out of range."""
        a = np.asarray(codes)
        if a.dtype == object or a.dtype.kind == "f":
            af = np.asarray(a, dtype=np.float64)
            if np.any(af != np.floor(af)):
                raise ValueError(f"{self.name}: codes must be integers")
            a = af
        elif a.dtype.kind not in "iub":
            raise ValueError(f"{self.name}: codes must be integers, got dtype {a.dtype}")
        if a.size:
            lo, hi = a.min(), a.max()
            if lo < 0 or hi > (1 << self.bits) - 1:
                bad = lo if lo < 0 else hi
                raise ValueError(f"{self.name}: code {int(bad)} is outside [0, {(1 << self.bits) - 1}]")
        c = a.astype(self.code_dtype)
        ok = self.valid_code_mask(c)
        if not np.all(ok):
            bad = c[~ok].ravel()[0]
            raise ValueError(f"{self.name}: code {int(bad):#x} is not a valid code of this format")
        return c

    # --- values ---------------------------------------------------------------------
    @abstractmethod
    def decode(self, codes) -> np.ndarray:
        """Exact float64 values of `codes` (NaN for NaN/NaR, +-inf for infinities)."""

    @abstractmethod
    def encode(self, x, rounding="rne", saturate=False, seed=None) -> np.ndarray:
        """float64 values -> codes, one exact rounding of each float64 value."""

    def to_scaled(self, codes):
        """Finite codes -> (int64 mantissa, int64 exponent), value = m * 2**e exactly.

        Non-finite codes give (0, 0); callers test `np.isfinite(decode(codes))`.
        """
        v = self.decode(codes)
        return f64_to_scaled(np.where(np.isfinite(v), v, 0.0))

    def encode_scaled(self, m, e, rounding="rne", saturate=False, seed=None):
        """Exact values m * 2**e (int64/object arrays) -> codes with one rounding.

        The default goes through float64 rounded to odd; exact for formats whose precision is
        <= 51 bits and whose range lies inside float64's normal range.
        """
        return self.encode(scaled_to_f64_odd(m, e), rounding=rounding, saturate=saturate, seed=seed)

    # --- arithmetic (on codes) --------------------------------------------------------
    # Results are rounded by the format's default encode rule (encode(x) without options).
    # Formats of <= 8 bits use a cached 2**(2*bits) table built from the exact path; others
    # call `_fast`, which families override with vectorized code proven equal to `_exact`.
    def mul(self, a, b) -> np.ndarray:
        """a * b on codes, one rounding of the exact product."""
        return self._binary("mul", a, b)

    def add(self, a, b) -> np.ndarray:
        """a + b on codes, one rounding of the exact sum."""
        return self._binary("add", a, b)

    def sub(self, a, b) -> np.ndarray:
        """a - b on codes, one rounding of the exact difference."""
        return self._binary("sub", a, b)

    def fma(self, a, b, c) -> np.ndarray:
        """a * b + c on codes with a single rounding of the exact result."""
        return self._fast("fma", self.check_codes(a), self.check_codes(b), self.check_codes(c))

    def neg(self, a) -> np.ndarray:
        """-a on codes, rounded like the other operations (exact unless it overflows)."""
        a = self.check_codes(a)
        return self._fast("sub", np.zeros_like(a) + self.encode(np.zeros(1))[0], a)

    def _binary(self, op, a, b):
        a, b = self.check_codes(a), self.check_codes(b)
        if self.bits <= 8:
            return _op_table(self, op)[(a.astype(np.intp) << self.bits) | b]
        return self._fast(op, a, b)

    def _fast(self, op, *codes):
        return self._exact(op, *codes)

    def _exact(self, op, *codes):
        """Reference arithmetic on checked codes via exact scaled integers (any family)."""
        codes = np.broadcast_arrays(*codes)
        vals = [self.decode(c) for c in codes]
        with np.errstate(all="ignore"):
            f = _F64_OPS[op](*vals)  # specials and signed zeros follow IEEE float64 rules
        finite = np.all([np.isfinite(v) for v in vals], axis=0)
        sc = [self.to_scaled(c) for c in codes]
        if op == "mul":
            m, e = mul_scaled(*sc[0], *sc[1])
        elif op == "add":
            m, e = add_scaled(*sc[0], *sc[1])
        elif op == "sub":
            m, e = add_scaled(*sc[0], -sc[1][0], sc[1][1])
        else:
            m, e = add_scaled(*mul_scaled(*sc[0], *sc[1]), *sc[2])
        nz = finite & (m != 0)
        out = self.encode(np.where(nz, 0.0, f))
        if np.any(nz):
            out[nz] = self.encode_scaled(m[nz], e[nz])
        return out

    # --- helpers ----------------------------------------------------------------------
    def all_codes(self) -> np.ndarray:
        """Every valid code (only for formats up to 16 bits)."""
        if self.bits > 16:
            raise ValueError(f"{self.name}: all_codes is only for formats of at most 16 bits")
        c = np.arange(1 << self.bits, dtype=np.uint64).astype(self.code_dtype)
        return c[self.valid_code_mask(c)]


def rng_for(seed):
    """numpy Generator for stochastic rounding (seed: int or Generator; None means seed 0, so
    the same call always gives the same codes)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


_F64_OPS = {
    "mul": lambda a, b: a * b,
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "fma": lambda a, b, c: a * b + c,
}


@functools.lru_cache(maxsize=64)
def _op_table(fmt: NumberFormat, op: str) -> np.ndarray:
    """All 2**(2*bits) results of `op` for a <= 8-bit format, from the exact path."""
    n = 1 << fmt.bits
    ok = fmt.valid_code_mask(np.arange(n).astype(fmt.code_dtype))
    a = np.repeat(np.arange(n), n)
    b = np.tile(np.arange(n), n)
    sel = ok[a] & ok[b]
    table = np.zeros(n * n, dtype=fmt.code_dtype)
    table[sel] = fmt._exact(op, a[sel].astype(fmt.code_dtype), b[sel].astype(fmt.code_dtype))
    table.setflags(write=False)
    return table
