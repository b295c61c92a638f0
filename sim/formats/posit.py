"""Bit-exact posit(n,es) reference: decode, encode, mul/add/sub/fma and the exact quire.

Vectorized numpy over integer fields; formats with n <= 8 answer binary ops from cached tables.

Semantics (2022 posit standard, generalized to 0 <= es <= 4): one zero (code 0), one NaR
(1 followed by zeros), every rounding acts on the unbounded bit string regime+exponent+fraction
(ties to the even pattern), finite nonzero results never round to 0 or NaR: they clamp to
+-minpos / +-maxpos.

Quire: a two's complement fixed-point register of
    quire_bits = 4 * max_scale + carry_bits + 2,   max_scale = (n - 2) * 2**es,
holding 2 * max_scale fraction bits (minpos**2 = 2**-(2 * max_scale) is its LSB), 2 * max_scale + 1
integer bits (maxpos**2 = 2**(2 * max_scale) fits), carry_bits guard bits and a sign bit. The
default carry_bits = 30 gives the standard's 16n bits for es = 2: any 2**31 - 1 products of
maxpos**2 add without overflow. A sum outside +-(2**(quire_bits-1) - 1) makes the quire NaR (the
pattern 1 followed by zeros, as for posits) and NaR stays until cleared.
"""
from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError
from forma.sim.formats.base import NumberFormat, check_rounding, f64_to_scaled, rng_for, round_up_decision

__all__ = ["PositFormat", "Quire", "parse_posit", "bench_posit", "QUIRE_CARRY_BITS"]

QUIRE_CARRY_BITS = 30   # the default carry bits: the standard's 16n-bit quire for es = 2

_SIG_BITS = 58          # significands kept below 2**58 while rounding: es + 57 tail bits < 2**62
_NORM_MSB = 61          # addition aligns both significands to this bit (2 spare bits below)


def _bit_length(v):
    """Number of significant bits of each non-negative int64 in v (0 for 0), exactly."""
    v = np.asarray(v, dtype=np.int64)
    b = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    # float64 may have rounded v up to the next power of two: step back when that happened.
    too_big = (b > 0) & ((v >> np.maximum(b - 1, 0)) == 0)
    return b - too_big


def _shift_right_jam(x, d):
    """x >> d for 0 <= x < 2**63, OR-ing any lost bits into the result's LSB."""
    d = np.minimum(d, 63)
    y = x >> d
    return y | (x != (y << d))


@dataclass(frozen=True)
class PositFormat(NumberFormat):
    """posit(n,es): n-bit two's complement tapered float with es exponent bits, 2 <= n <= 32."""

    n: int
    es: int

    family = "posit"

    def __post_init__(self):
        for field, value, lo, hi in (("n", self.n, 2, 32), ("es", self.es, 0, 4)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SpecError(f"posit({self.n},{self.es}): {field} must be an integer in {lo}..{hi}.")
            if not lo <= value <= hi:
                raise SpecError(f"posit({self.n},{self.es}): {field} must be in {lo}..{hi}.")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "es", int(self.es))

    # ----- format constants -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"posit({self.n},{self.es})"

    @property
    def bits(self) -> int:
        return self.n

    @property
    def nar_code(self) -> int:
        return 1 << (self.n - 1)

    @property
    def useed(self) -> int:
        """Regime base 2**(2**es)."""
        return 1 << (1 << self.es)

    @property
    def max_scale(self) -> int:
        """log2(maxpos) = (n-2) * 2**es; minpos = 2**-max_scale."""
        return (self.n - 2) << self.es

    @property
    def min_scale(self) -> int:
        return -self.max_scale

    @property
    def maxpos(self) -> float:
        return 2.0 ** self.max_scale

    @property
    def minpos(self) -> float:
        return 2.0 ** -self.max_scale

    @property
    def maxpos_code(self) -> int:
        return (1 << (self.n - 1)) - 1

    @property
    def minpos_code(self) -> int:
        return 1

    @property
    def frac_bits(self) -> int:
        """Most fraction bits any value has (next to 1.0): max(n - 3 - es, 0)."""
        return max(self.n - 3 - self.es, 0)

    @property
    def quire_frac_bits(self) -> int:
        """Quire fraction bits: 2 * max_scale (its LSB weighs minpos**2)."""
        return 2 * self.max_scale

    def quire_width(self, carry_bits: int = QUIRE_CARRY_BITS) -> int:
        """Quire width in bits: sign + carry_bits + (2*max_scale + 1) integer + 2*max_scale fraction."""
        if isinstance(carry_bits, bool) or not isinstance(carry_bits, int) or carry_bits < 0:
            raise SpecError(f"carry_bits={carry_bits!r}: must be an integer >= 0.")
        return 4 * self.max_scale + carry_bits + 2

    @property
    def quire_bits(self) -> int:
        """Default quire width (carry_bits = 30): 16n for es = 2, as in the 2022 standard."""
        return self.quire_width()

    # ----- codes <-> fields ----------------------------------------------------------------------
    def fields(self, codes):
        """Split codes into (negative, sig, exp, is_zero, is_nar): |value| = sig * 2**exp exactly.

        sig < 2**(frac_bits+1) carries the hidden bit at position frac_bits (0 for zero and NaR).
        Formats with n <= 16 look the fields up in a cached table of all codes.
        """
        x = self.check_codes(codes)
        if self.n <= 16:
            return tuple(column[x] for column in _field_table(self))
        return self._split(x.astype(np.int64))

    def _split(self, x):
        """fields() computed from the bit pattern of int64 codes x."""
        n, es, f = self.n, self.es, self.frac_bits
        full = (1 << n) - 1
        body_mask = (1 << (n - 1)) - 1
        negative = (x >> (n - 1)) & 1 == 1
        mag = np.where(negative, (-x) & full, x)
        body = mag & body_mask
        first = (body >> (n - 2)) & 1
        # Regime run length m: leading bits of the (n-1)-bit body equal to its first bit.
        m = (n - 1) - _bit_length(np.where(first == 1, ~body & body_mask, body))
        k = np.where(first == 1, m - 1, -m)
        r = np.maximum(n - 2 - m, 0)                   # bits after regime and terminator
        rest = body & ((1 << r) - 1)
        cut = np.maximum(es - r, 0)                    # exponent bits cut off (read as zeros)
        fw = np.maximum(r - es, 0)                     # fraction bits present
        e = (rest >> fw) << cut
        frac = rest & ((1 << fw) - 1)
        scale = (k << es) + e
        sig = ((1 << fw) | frac) << (f - fw)
        is_zero = x == 0
        is_nar = x == self.nar_code
        special = is_zero | is_nar
        sig = np.where(special, 0, sig)
        exp = np.where(special, 0, scale - f)
        return negative & ~special, sig, exp, is_zero, is_nar

    def to_scaled(self, codes):
        """Exact value as (mantissa, exponent) int64 arrays: value = mantissa * 2**exponent; NaR -> (0, 0)."""
        negative, sig, exp, _, _ = self.fields(codes)
        return np.where(negative, -sig, sig), exp

    def decode(self, codes) -> np.ndarray:
        """Exact float64 value of each code (NaR -> NaN). Every posit with n <= 32, es <= 4 fits."""
        negative, sig, exp, _, is_nar = self.fields(codes)
        v = np.ldexp(np.where(negative, -sig, sig).astype(np.float64), exp.astype(np.int32))
        return np.where(is_nar, np.nan, v)

    # ----- rounding ------------------------------------------------------------------------------
    def _round(self, negative, sig, exp, sticky=False, rounding="rne", seed=None):
        """Posit codes of (-1)**negative * (sig * 2**exp + tiny), tiny in (0, 2**exp) iff sticky.

        sig: int64 >= 0 (0 gives code 0). The unbounded bit string regime+exponent+fraction is cut
        to n-1 bits and rounded by `rounding` (base.ROUNDING_MODES; rne = ties to even pattern).
        Magnitudes above maxpos give maxpos and nonzero ones below minpos give minpos, in every mode.
        """
        check_rounding(rounding)
        n, es = self.n, self.es
        sig = np.asarray(sig, dtype=np.int64)
        exp = np.asarray(exp, dtype=np.int64)
        sticky = np.asarray(sticky, dtype=bool)
        # Keep at most _SIG_BITS significant bits; fold the rest into sticky.
        b = _bit_length(sig)
        if b.size and b.max() > _SIG_BITS:
            drop = np.maximum(b - _SIG_BITS, 0)
            sticky = sticky | ((sig & ((1 << drop) - 1)) != 0)
            sig, exp, b = sig >> drop, exp + drop, b - drop
        scale = exp + b - 1
        inside = (scale >= -self.max_scale) & (scale < self.max_scale)
        clamped = np.where(scale >= self.max_scale, self.maxpos_code, self.minpos_code)
        scale = np.where(inside, scale, 0)
        k = scale >> es
        regime_len = np.where(k >= 0, k + 2, 1 - k)
        regime = np.where(k >= 0, ((1 << (k + 1)) - 1) << 1, 1)
        avail = n - 1 - regime_len                     # bits left for exponent + fraction
        hb = np.maximum(b - 1, 0)
        tail = ((scale & ((1 << es) - 1)) << hb) | (sig & ((1 << hb) - 1))   # exponent, fraction
        shift = es + hb - avail                        # tail bits that do not fit (<= 63)
        sr = np.maximum(shift, 0)
        body = (regime << avail) | np.where(shift > 0, tail >> sr, tail << np.maximum(-shift, 0))
        dropped = tail & ((1 << sr) - 1)
        half = (1 << sr) >> 1
        rem_cmp = np.where(sr > 0, np.sign(dropped - half) + ((dropped == half) & sticky), -1)
        rng = frac = None
        if rounding == "stochastic":
            rng, frac = rng_for(seed), np.ldexp(dropped.astype(np.float64), -sr.astype(np.int32))
        up = round_up_decision(rem_cmp, (dropped == 0) & ~sticky, negative, (body & 1) == 1, rounding,
                               rng, frac)
        body = np.where(inside, body + up, clamped)
        body = np.where(sig == 0, 0, body)
        code = np.where(negative, (-body) & ((1 << n) - 1), body)
        return code.astype(self.code_dtype)

    def encode_scaled(self, m, e, rounding="rne", saturate=False, seed=None) -> np.ndarray:
        """Posit codes of exact values m * 2**e (int64 or Python-int object arrays), one rounding."""
        m, e = np.broadcast_arrays(np.asarray(m), np.asarray(e, dtype=np.int64))
        if m.dtype != object:
            m = m.astype(np.int64)
            return self._round(m < 0, np.abs(m), e, False, rounding, seed)
        sig, drop, sticky = (np.zeros(m.shape, t) for t in (np.int64, np.int64, bool))
        for i, v in np.ndenumerate(m):
            v = abs(int(v))
            drop[i] = max(v.bit_length() - _SIG_BITS, 0)
            sig[i], sticky[i] = v >> int(drop[i]), v & ((1 << int(drop[i])) - 1) != 0
        negative = np.vectorize(lambda v: v < 0, otypes=[bool])(m) if m.size else np.zeros(m.shape, bool)
        return self._round(negative, sig, e + drop, sticky, rounding, seed)

    def encode(self, x, rounding: str = "rne", saturate: bool = False, seed=None) -> np.ndarray:
        """Posit codes of float64 values x, one rounding (see base.ROUNDING_MODES; default rne).

        Finite values clamp to +-maxpos / +-minpos, never 0 or NaR; NaN gives NaR; +-inf gives NaR,
        or +-maxpos when saturate is true.
        """
        x = np.asarray(x, dtype=np.float64)
        m, e = f64_to_scaled(np.where(np.isfinite(x), x, 0.0))
        code = self.encode_scaled(m, e, rounding=rounding, seed=seed)
        inf_code = np.where(x < 0, self.nar_code + 1, self.maxpos_code)
        code = np.where(np.isinf(x) & saturate, inf_code, code)
        code = np.where(np.isnan(x) | (np.isinf(x) & (not saturate)), self.nar_code, code)
        return code.astype(self.code_dtype)

    # ----- arithmetic (mul/add/sub/fma come from NumberFormat: tables for n <= 8, else _fast) -------
    def _sum2(self, neg_a, sig_a, exp_a, neg_b, sig_b, exp_b, nar):
        """Round (-1)**neg_a sig_a 2**exp_a + (-1)**neg_b sig_b 2**exp_b (sigs < 2**61) once, RNE.

        Both significands are aligned with their MSB at bit 61; the smaller term is shifted right
        with its lost bits jammed into its LSB. Shifts <= 2 lose nothing (two spare low bits), and
        for larger shifts the sum keeps >= 60 bits above the jammed LSB, so rounding is exact.
        """
        far = np.int64(-1 << 40)                       # exponent given to zero terms
        na_ = _NORM_MSB + 1 - _bit_length(sig_a)
        nb_ = _NORM_MSB + 1 - _bit_length(sig_b)
        ea = np.where(sig_a == 0, far, exp_a - na_)
        eb = np.where(sig_b == 0, far, exp_b - nb_)
        top = np.maximum(ea, eb)
        a = _shift_right_jam(sig_a << np.minimum(na_, 62), top - ea)
        b = _shift_right_jam(sig_b << np.minimum(nb_, 62), top - eb)
        s = np.where(neg_a, -a, a) + np.where(neg_b, -b, b)
        code = self._round(s < 0, np.abs(s), top)
        return np.where(nar, self.nar_code, code).astype(self.code_dtype)

    def _fast(self, op, *codes):
        """mul/add/sub/fma on checked codes: vectorized integer fields, one RNE rounding."""
        (sa, ma, ea, _, nra), (sb, mb, eb, _, nrb) = self.fields(codes[0]), self.fields(codes[1])
        if op == "mul":
            code = self._round(sa ^ sb, ma * mb, ea + eb)
            return np.where(nra | nrb, self.nar_code, code).astype(self.code_dtype)
        if op == "fma":
            sc, mc, ec, _, nrc = self.fields(codes[2])
            return self._sum2(sa ^ sb, ma * mb, ea + eb, sc, mc, ec, nra | nrb | nrc)
        return self._sum2(sa, ma, ea, sb ^ (op == "sub"), mb, eb, nra | nrb)

    def neg(self, a) -> np.ndarray:
        """-a on codes (exact; 0 and NaR map to themselves)."""
        return ((-self.check_codes(a).astype(np.int64)) & ((1 << self.n) - 1)).astype(self.code_dtype)

    # ----- quire ---------------------------------------------------------------------------------
    def _products(self, a, b):
        """Exact products a*b as Python ints in quire units (2**-quire_frac_bits), plus NaR flags."""
        sa, ma, ea, _, nra = self.fields(a)
        sb, mb, eb, _, nrb = self.fields(b)
        sig = ma * mb
        shift = ea + eb + self.quire_frac_bits
        # Products are multiples of minpos**2, so a negative shift only drops zero bits.
        sig = sig >> np.maximum(-shift, 0)
        shift = np.maximum(shift, 0)
        signed = np.where(sa ^ sb, -sig, sig).astype(object)
        return np.asarray(signed << shift.astype(object), dtype=object), nra | nrb

    def quire_to_posit(self, value, nar=False) -> np.ndarray:
        """Posit codes of quire integers value (units 2**-quire_frac_bits), rounded once, RNE."""
        code = self.encode_scaled(np.asarray(value, dtype=object), -self.quire_frac_bits)
        return np.where(nar, self.nar_code, code).astype(self.code_dtype)

    @staticmethod
    def _out_of_range(value, width):
        """True where quire integers do not fit a width-bit quire (|v| > 2**(width-1) - 1)."""
        limit = (1 << (width - 1)) - 1
        return np.vectorize(lambda v: abs(v) > limit, otypes=[bool])(value)

    def quire_dot(self, a, b, carry_bits: int = QUIRE_CARRY_BITS) -> np.ndarray:
        """Fused dot product over the last axis: exact quire sum of a*b, rounded once (RNE).

        Leading axes broadcast. The result is NaR if any input is NaR or if a running sum, taken in
        index order, leaves the quire's range (see the module docstring).
        """
        term, nar = self._products(a, b)
        if term.shape[-1] == 0:
            return np.zeros(term.shape[:-1], self.code_dtype)
        partial = np.cumsum(term, axis=-1)
        overflow = self._out_of_range(partial, self.quire_width(carry_bits)).any(axis=-1)
        return self.quire_to_posit(partial[..., -1], nar.any(axis=-1) | overflow)

    def quire(self, shape=(), carry_bits: int = QUIRE_CARRY_BITS) -> "Quire":
        """A cleared Quire of this format (one register per element of shape)."""
        return Quire(self, shape, carry_bits)


@functools.lru_cache(maxsize=None)
def _field_table(fmt: PositFormat):
    return fmt._split(np.arange(1 << fmt.n, dtype=np.int64))


class Quire:
    """Exact posit accumulator mirroring a hardware quire: q += a*b, q -= a*b, round to posit.

    value holds the quire as Python ints in units of 2**-fmt.quire_frac_bits (one per element of
    shape); nar flags registers that saw a NaR input or overflowed, until clear().
    """

    def __init__(self, fmt: PositFormat, shape=(), carry_bits: int = QUIRE_CARRY_BITS):
        self.fmt = fmt
        self.width = fmt.quire_width(carry_bits)
        self.shape = tuple(np.broadcast_shapes(shape))
        self.clear()

    def clear(self) -> None:
        self.value = np.zeros(self.shape, dtype=object)       # Python int 0s
        self.nar = np.zeros(self.shape, dtype=bool)

    def _accumulate(self, a, b, negate):
        term, nar = self.fmt._products(a, b)
        if np.broadcast_shapes(term.shape, self.shape) != self.shape:
            raise ValueError(f"quire of shape {self.shape} cannot take operands of shape {term.shape}.")
        value = np.asarray(self.value - term if negate else self.value + term, dtype=object)
        self.nar = self.nar | nar | self.fmt._out_of_range(value, self.width)
        self.value = np.where(self.nar, np.asarray(0, dtype=object), value)
        return self

    def fma(self, a, b) -> "Quire":
        """q += a*b exactly (codes broadcast against the quire's shape)."""
        return self._accumulate(a, b, negate=False)

    def fms(self, a, b) -> "Quire":
        """q -= a*b exactly."""
        return self._accumulate(a, b, negate=True)

    def add(self, c) -> "Quire":
        """q += c exactly (c are posit codes)."""
        return self._accumulate(c, self.fmt.encode(1.0), negate=False)

    def to_posit(self) -> np.ndarray:
        """The quire rounded once to posit codes (RNE); NaR where flagged."""
        return self.fmt.quire_to_posit(self.value, self.nar)

    def to_bits(self) -> np.ndarray:
        """The quire register as unsigned ints of self.width bits (two's complement; NaR = 1 << (width-1))."""
        mask = (1 << self.width) - 1
        bits = np.vectorize(lambda v: int(v) & mask, otypes=[object])(self.value)
        return np.where(self.nar, 1 << (self.width - 1), bits)


_POSIT_CALL = re.compile(r"^\s*posit\s*\(\s*([^,()]*?)\s*,\s*([^,()]*?)\s*\)\s*$", re.IGNORECASE)
_POSIT_ALIAS = re.compile(r"^\s*posit(\d+)_(\d+)\s*$", re.IGNORECASE)


def parse_posit(text: str) -> PositFormat | None:
    """Parse "posit(n,es)" (spaces allowed) or the alias "positN_E" (e.g. posit16_1 = posit(16,1)).

    Returns None when text does not start with "posit"; raises SpecError when it does but is bad.
    A bare "positN" is refused: SoftPosit's posit16 (es=1) and the 2022 standard's (es=2) differ.
    """
    if not isinstance(text, str) or not text.strip().lower().startswith("posit"):
        return None
    shown = text.strip()
    m = _POSIT_CALL.match(text) or _POSIT_ALIAS.match(text)
    if not m:
        raise SpecError(f"{shown}: write posit(n,es) with integers n in 2..32 and es in 0..4.")
    values = []
    for field, raw in zip(("n", "es"), m.groups()):
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise SpecError(f"{shown}: {field} must be an integer, got {raw!r}.")
        values.append(int(raw))
    return PositFormat(*values)


def _rate(fn, args, count, repeats):
    """count / median wall time of fn(*args) over repeats runs (after one warm-up call)."""
    fn(*(x[:16] for x in args))                            # builds lookup tables outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return count / float(np.median(times))


def bench_posit(size: int = 1 << 20, repeats: int = 5, seed: int = 0):
    """Throughput rows (format, op, results/s, median of repeats) on seeded random codes."""
    rng = np.random.default_rng(seed)
    rows = []
    for fmt, ops in ((PositFormat(8, 0), ("mul", "add")), (PositFormat(8, 2), ("mul", "add")),
                     (PositFormat(16, 1), ("mul", "add", "fma")), (PositFormat(32, 2), ("mul", "add"))):
        a, b, c = (rng.integers(0, 1 << fmt.n, size).astype(fmt.code_dtype) for _ in range(3))
        for op in ops:
            args = (a, b, c) if op == "fma" else (a, b)
            rows.append((fmt.name, op, _rate(getattr(fmt, op), args, size, repeats)))
    fmt = PositFormat(16, 1)
    a, b = (rng.integers(0, 1 << 16, (size // 256, 256)).astype(fmt.code_dtype) for _ in range(2))
    rows.append((fmt.name, "quire_dot products", _rate(fmt.quire_dot, (a, b), a.size, 1)))
    return rows
