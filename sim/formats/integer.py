"""Two's-complement / unsigned integers and fixed point with ap_fixed quantization and overflow.

A code is the W-bit pattern; its value is raw * 2**-F with raw the (un)signed integer, F = W - I.

Spellings (all round-trip through `parse_format`):
  int1..int64, uint1..uint64   value = raw; `int1` is signed 1-bit = {-1, 0}. Encoding rounds to
                               nearest even, overflow wraps modulo 2**W (hardware behaviour).
  int8_narrow, uint8_narrow    QONNX narrow range: int8_narrow is [-127, 127], uint8_narrow is
                               [0, 254]; code 0x80 of int8_narrow is invalid. Overflow saturates.
  fixed<W,I>, ufixed<W,I>      ap_fixed<W,I> / ap_ufixed<W,I>: W in [1, 64] total bits, I integer
                               bits including the sign, I in [W-64, W] (negative I = pure fraction
                               with leading zero bits; I > W is rejected: no format here has
                               LSB weight above 1). Defaults TRN, WRAP as in ap_fixed.
  fixed<W,I,Q> / fixed<W,I,Q,O> Q in TRN, TRN_ZERO, RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV;
                               O in WRAP, SAT, SAT_ZERO, SAT_SYM (ap_fixed's meaning; SAT_SYM clamps
                               to [-max, max], so the most negative code never results).

Arithmetic (mul/add/sub/fma) rounds the exact result with the format's own Q and O, exactly as
an ap_fixed assignment `c = a * b` does. Formats wider than 53 bits decode to float64 only when
every value is exact there (else ValueError); use `to_raw` for exact integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError

from .base import (ROUNDING_MODES, NumberFormat, bit_length, f64_to_scaled, rng_for,
                   round_shift)

#: ap_fixed quantization mode -> rounding mode name of base.ROUNDING_MODES
AP_QUANT = {
    "TRN": "floor", "TRN_ZERO": "trunc", "RND": "half_up", "RND_ZERO": "half_zero",
    "RND_MIN_INF": "half_down", "RND_INF": "half_away", "RND_CONV": "rne",
}
AP_OVERFLOW = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")


@dataclass(frozen=True)
class FixedFormat(NumberFormat):
    """Integer (I == W, F = 0) or fixed-point format; see the module docstring."""

    bits: int
    int_bits: int
    signed: bool = True
    narrow: bool = False
    quant: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self):
        w, i = self.bits, self.int_bits
        if not 1 <= w <= 64:
            raise SpecError(f"{self._sketch()}: width W ({w}) must be in [1, 64]")
        if not w - 64 <= i <= w:
            raise SpecError(f"{self._sketch()}: integer bits I ({i}) must be in [{w - 64}, W={w}]")
        if self.quant not in AP_QUANT:
            raise SpecError(f"{self._sketch()}: quantization mode {self.quant!r} must be one of "
                            f"{', '.join(AP_QUANT)}")
        if self.overflow not in AP_OVERFLOW:
            raise SpecError(f"{self._sketch()}: overflow mode {self.overflow!r} must be one of "
                            f"{', '.join(AP_OVERFLOW)}")
        if self.narrow and not self._int_shaped():
            raise SpecError(f"{self._sketch()}: narrow range exists only for integers int1..int32 "
                            "(use SAT_SYM for fixed point)")
        if self.narrow and self.signed and w == 1:
            raise SpecError("int1_narrow: a narrow signed integer needs at least 2 bits (range [2, 32])")

    def _sketch(self):
        return f"{'' if self.signed else 'u'}fixed<{self.bits},{self.int_bits}>"

    def _int_shaped(self) -> bool:
        return (self.int_bits == self.bits and self.bits <= 64 and self.quant == "RND_CONV"
                and self.overflow == ("SAT" if self.narrow else "WRAP"))

    # --- identity -----------------------------------------------------------------------
    @property
    def family(self) -> str:
        return "int" if self._int_shaped() else "fixed"

    @property
    def name(self) -> str:
        if self._int_shaped():
            return f"{'' if self.signed else 'u'}int{self.bits}{'_narrow' if self.narrow else ''}"
        modes = ""
        if self.overflow != "WRAP":
            modes = f",{self.quant},{self.overflow}"
        elif self.quant != "TRN":
            modes = f",{self.quant}"
        return f"{'' if self.signed else 'u'}fixed<{self.bits},{self.int_bits}{modes}>"

    @property
    def frac_bits(self) -> int:
        return self.bits - self.int_bits

    @property
    def raw_min(self) -> int:
        return (-(1 << (self.bits - 1)) + int(self.narrow)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return ((1 << (self.bits - 1)) - 1) if self.signed else (1 << self.bits) - 1 - int(self.narrow)

    @property
    def lsb(self) -> float:
        """Weight of one raw unit, 2**-F."""
        return 2.0 ** -self.frac_bits

    @property
    def max_value(self) -> float:
        return self.raw_max * self.lsb

    @property
    def min_value(self) -> float:
        return self.raw_min * self.lsb

    # --- codes <-> raw integers -----------------------------------------------------------
    def valid_code_mask(self, codes):
        if not self.narrow:
            return np.ones(np.shape(codes), dtype=bool)
        bad = (1 << (self.bits - 1)) if self.signed else (1 << self.bits) - 1
        return np.asarray(codes) != bad

    def to_raw(self, codes) -> np.ndarray:
        """Codes -> signed raw integers (int64), value = raw * 2**-frac_bits.

        ufixed<64,...> raws above 2**63-1 come back as an object array of Python ints.
        """
        c = self.check_codes(codes)
        if not self.signed:
            if self.bits == 64 and c.size and int(c.max()) >> 63:
                return c.astype(object)
            return c.astype(np.int64)
        if self.bits == 64:
            return c.view(np.int64)
        u = c.astype(np.int64)
        return np.where(u >> (self.bits - 1) == 1, u - (1 << self.bits), u)

    def from_raw(self, raw) -> np.ndarray:
        """Raw integers in [raw_min, raw_max] -> codes; ValueError outside (never wraps)."""
        r = np.asarray(raw)
        if r.dtype.kind == "f":
            if np.any(r != np.floor(r)):
                raise ValueError(f"{self.name}: raw values must be integers")
            r = r.astype(np.int64)
        if r.size:
            lo, hi = int(r.min()), int(r.max())
            if lo < self.raw_min or hi > self.raw_max:
                bad = lo if lo < self.raw_min else hi
                raise ValueError(f"{self.name}: raw value {bad} is outside [{self.raw_min}, {self.raw_max}]")
        return self._raw_to_codes(r)

    def _raw_to_codes(self, r):
        mask = (1 << self.bits) - 1
        if r.dtype == object:
            return np.array([int(v) & mask for v in r.ravel()], dtype=np.uint64) \
                .reshape(r.shape).astype(self.code_dtype)
        if self.bits == 64:
            return r.astype(np.int64).view(np.uint64)
        return (r.astype(np.int64) & mask).astype(self.code_dtype)

    # --- values -----------------------------------------------------------------------
    def decode(self, codes) -> np.ndarray:
        """Exact float64 values raw * 2**-F (ValueError if a >53-bit value is not exact)."""
        raw = self.to_raw(codes)
        v = np.ldexp(np.asarray(raw, dtype=np.float64), -self.frac_bits)
        if self.bits > 53:
            back = np.array([int(x) for x in np.ldexp(v, self.frac_bits).ravel()], dtype=object)
            if np.any(back != np.asarray(raw, dtype=object).ravel()):
                raise ValueError(f"{self.name}: some values are not exact in float64; use to_raw")
        return v

    def to_scaled(self, codes):
        """Codes -> (raw, -F): value = raw * 2**-F exactly (int64 or object array)."""
        raw = self.to_raw(codes)
        return raw, np.full(np.shape(raw), -self.frac_bits, dtype=np.int64)

    def modes(self, rounding=None, saturate=None) -> tuple[str, str]:
        """(rounding mode, ap overflow mode) after applying encode's overrides.

        rounding: None (the format's Q), a base.ROUNDING_MODES name or an ap_fixed Q name.
        saturate: None (the format's O), True (SAT), False (WRAP) or an ap_fixed O name.
        """
        if rounding is None:
            rnd = AP_QUANT[self.quant]
        elif rounding in AP_QUANT:
            rnd = AP_QUANT[rounding]
        elif rounding in ROUNDING_MODES:
            rnd = rounding
        else:
            raise SpecError(f"{self.name}: rounding {rounding!r} must be one of "
                            f"{', '.join(ROUNDING_MODES + tuple(AP_QUANT))}")
        if saturate is None:
            ovf = self.overflow
        elif saturate is True or saturate is False:
            ovf = "SAT" if saturate else "WRAP"
        elif saturate in AP_OVERFLOW:
            ovf = saturate
        else:
            raise SpecError(f"{self.name}: saturate {saturate!r} must be None, True, False or one "
                            f"of {', '.join(AP_OVERFLOW)}")
        return rnd, ovf

    def encode(self, x, rounding=None, saturate=None, seed=None) -> np.ndarray:
        """float64 -> codes: one rounding of the exact value to a multiple of 2**-F, then overflow.

        Defaults are the format's Q and O (see `modes`). NaN raises ValueError; +-inf
        saturates under SAT/SAT_SYM, gives 0 under SAT_ZERO and raises under WRAP.
        """
        x = np.asarray(x, dtype=np.float64)
        rnd, ovf = self.modes(rounding, saturate)
        if np.any(np.isnan(x)):
            raise ValueError(f"{self.name}: NaN has no encoding in an integer/fixed-point format")
        inf = np.isinf(x)
        if np.any(inf):
            if ovf == "WRAP":
                raise ValueError(f"{self.name}: infinity cannot wrap; encode with saturate=True")
            out = self.encode(np.where(inf, 0.0, x), rounding, saturate, seed)
            big = self.raw_max if ovf != "SAT_ZERO" else 0
            small = self.raw_min if ovf == "SAT" else (-self.raw_max if self.signed else 0)
            small = small if ovf != "SAT_ZERO" else 0
            fill = self._raw_to_codes(np.where(x > 0, big, small).astype(np.int64))
            return np.where(inf, fill, out)
        m, e = f64_to_scaled(x)
        return self.encode_scaled(m, e, rounding, saturate, seed)

    def encode_scaled(self, m, e, rounding=None, saturate=None, seed=None) -> np.ndarray:
        """Exact values m * 2**e (integer arrays) -> codes; one rounding, then overflow."""
        rnd, ovf = self.modes(rounding, saturate)
        m, e = np.broadcast_arrays(np.asarray(m), np.asarray(e))
        k = e.astype(np.int64) + self.frac_bits  # value in LSB units = m * 2**k
        left = np.maximum(k, 0)
        if m.dtype == object or bit_length(m) + int(left.max(initial=0)) > 61 or self.bits > 60:
            m, left = m.astype(object), left.astype(object)
        raw = round_shift(m << left, np.maximum(-k, 0), rnd, rng_for(seed) if rnd == "stochastic" else None)
        return self._raw_to_codes(self._overflow(raw, ovf))

    def _overflow(self, raw, ovf):
        lo, hi = self.raw_min, self.raw_max
        if ovf == "WRAP":
            base = -(1 << (self.bits - 1)) if self.signed else 0
            raw = (raw - base) % (1 << self.bits) + base
            if self.narrow and np.any(raw < lo) | np.any(raw > hi):
                raise ValueError(f"{self.name}: a wrapped result falls on the excluded narrow code")
            return raw
        if ovf == "SAT_SYM" and self.signed:
            lo = -hi
        if ovf == "SAT_ZERO":
            return np.where((raw < lo) | (raw > hi), 0, raw)
        return np.where(raw < lo, lo, np.where(raw > hi, hi, raw))

    # --- arithmetic ---------------------------------------------------------------------
    def _fast(self, op, *codes):
        """Exact integer arithmetic on raws, rounded once by the format's Q and O."""
        r = [self.to_raw(c) for c in np.broadcast_arrays(*codes)]
        f = self.frac_bits
        wide = self.bits > 30 or self.bits + f > 61
        if wide:
            r = [x.astype(object) for x in r]
        if op == "mul":
            return self.encode_scaled(r[0] * r[1], np.full(r[0].shape, -2 * f))
        if op in ("add", "sub"):
            s = r[0] + r[1] if op == "add" else r[0] - r[1]
            return self.encode_scaled(s, np.full(r[0].shape, -f))
        exact = r[0] * r[1] + (r[2] << f if wide else r[2] * (1 << f))
        return self.encode_scaled(exact, np.full(r[0].shape, -2 * f))

    def _exact(self, op, *codes):
        return self._fast(op, *codes)
