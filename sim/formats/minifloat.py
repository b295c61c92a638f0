"""Binary minifloats (FP4/FP6/FP8, float16, bfloat16, custom eXmY): decode, correctly rounded
encode, and arithmetic on codes.

Spellings (`parse_format`; every format prints back its canonical name):
  ml_dtypes names, verbatim: float8_e4m3fn float8_e5m2 float8_e4m3 float8_e3m4 float8_e4m3fnuz
    float8_e5m2fnuz float8_e4m3b11fnuz float8_e8m0fnu float6_e3m2fn float6_e2m3fn float4_e2m1fn,
    plus float16 (e5m10), bfloat16 (e8m7), float32 (e8m23).
  generic: float{N}_e{E}m{M}[_b{bias}][_{style}][_nosub]  with N = 1 + E + M, E in [1, 8],
    M in [0, 23], bias in [-256, 256]; style (default ieee):
      ieee    exponent field all ones = inf (mantissa 0) / NaN (mantissa != 0); needs M >= 1
      fn      no inf; NaN = exponent and mantissa all ones (both signs)   (OCP E4M3 style)
      fnuz    no inf, no -0; the single NaN is the negative-zero pattern 1000..0
      finite  no inf, no NaN: every code is a number                   (OCP FP6/FP4 style)
      fnu     unsigned (N = E + M), no zero, no subnormals, all ones = NaN (OCP E8M0 style)
    default bias 2**(E-1) - 1 (fnuz: 2**(E-1), fnu: 2**(E-1) - 1).
    Note the ml_dtypes names float6_e3m2fn/float6_e2m3fn/float4_e2m1fn mean style "finite".
  _nosub: no subnormals; exponent field 0 decodes to +-0 whatever the mantissa (denormals are
    zero) and encode rounds to the nearest of {0, min_normal} below min_normal.

Encoding rules (x is float64; one rounding of the exact value):
  * rounding: every base.ROUNDING_MODES name; "rne" ties go to the even code. With M = 0 the
    even-digit rule is void (both neighbours have significand 1): ties go to the larger magnitude
    (as ml_dtypes does for E8M0). In _nosub formats a tie between 0 and min_normal goes to 0.
  * overflow (the rounded magnitude exceeds max_value): saturate=True or a rounding toward
    zero for that sign (trunc; floor of x > 0; ceil of x < 0) gives +-max_value; otherwise inf
    (ieee), NaN (fn, fnuz, fnu) or +-max_value (finite: OCP MX rule, no special codes).
  * +-inf input: inf (ieee), NaN (fn, fnuz, fnu), +-max_value (finite, or saturate=True).
  * NaN input: the canonical NaN (positive, mantissa MSB set for ieee); ValueError for finite.
  * fnu: x <= 0 (incl. -0) gives NaN; 0 < x < 2**-bias gives the smallest code (no zero).
  * zero results keep the sign of x (fnuz: always +0).
Arithmetic (mul/add/sub/fma) is IEEE-754 style: exact result, one rne rounding, non-saturating
(overflow -> inf/NaN/max as above); NaN in -> NaN out; inf*0, inf-inf -> NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError

from .base import NumberFormat, check_rounding, rng_for, round_up_decision

STYLES = ("ieee", "fn", "fnuz", "finite", "fnu")

#: ml_dtypes / common names -> (E, M, bias, style, subnormals)
NAMED = {
    "float8_e4m3fn": (4, 3, 7, "fn", True),
    "float8_e5m2": (5, 2, 15, "ieee", True),
    "float8_e4m3": (4, 3, 7, "ieee", True),
    "float8_e3m4": (3, 4, 3, "ieee", True),
    "float8_e4m3fnuz": (4, 3, 8, "fnuz", True),
    "float8_e5m2fnuz": (5, 2, 16, "fnuz", True),
    "float8_e4m3b11fnuz": (4, 3, 11, "fnuz", True),
    "float8_e8m0fnu": (8, 0, 127, "fnu", False),
    "float6_e3m2fn": (3, 2, 3, "finite", True),
    "float6_e2m3fn": (2, 3, 1, "finite", True),
    "float4_e2m1fn": (2, 1, 1, "finite", True),
    "float16": (5, 10, 15, "ieee", True),
    "bfloat16": (8, 7, 127, "ieee", True),
    "float32": (8, 23, 127, "ieee", True),
}


def default_bias(exp_bits: int, style: str) -> int:
    return (1 << (exp_bits - 1)) - (0 if style == "fnuz" else 1)


@dataclass(frozen=True)
class FloatFormat(NumberFormat):
    """A binary minifloat: sign (unless fnu), E exponent bits, M mantissa bits, bias, style."""

    exp_bits: int
    man_bits: int
    bias: int
    style: str = "ieee"
    subnormals: bool = True

    family = "float"

    def __post_init__(self):
        e, m = self.exp_bits, self.man_bits
        sketch = f"e{e}m{m}"
        if not 1 <= e <= 8:
            raise SpecError(f"{sketch}: exponent bits ({e}) must be in [1, 8]")
        if not 0 <= m <= 23:
            raise SpecError(f"{sketch}: mantissa bits ({m}) must be in [0, 23]")
        if self.style not in STYLES:
            raise SpecError(f"{sketch}: style {self.style!r} must be one of {', '.join(STYLES)}")
        if not -256 <= self.bias <= 256:
            raise SpecError(f"{sketch}: bias ({self.bias}) must be in [-256, 256]")
        if self.style == "ieee" and m == 0:
            raise SpecError(f"{sketch}: ieee style needs a mantissa bit for NaN (M >= 1); use fn or finite")
        if self.style == "fnu" and self.subnormals:
            object.__setattr__(self, "subnormals", False)
        if self.max_mag_code < 1 or not self.max_value > 0:
            raise SpecError(f"{sketch}_{self.style}: has no positive finite value; widen E or M")

    # --- identity -----------------------------------------------------------------------
    @property
    def signed(self) -> bool:
        return self.style != "fnu"

    @property
    def bits(self) -> int:
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def name(self) -> str:
        key = (self.exp_bits, self.man_bits, self.bias, self.style, self.subnormals)
        for n, params in NAMED.items():
            if params == key:
                return n
        s = f"float{self.bits}_e{self.exp_bits}m{self.man_bits}"
        if self.bias != default_bias(self.exp_bits, self.style):
            s += f"_b{self.bias}"
        if self.style != "ieee":
            s += f"_{self.style}"
        if not self.subnormals and self.style != "fnu":
            s += "_nosub"
        return s

    # --- parameters the hardware needs ----------------------------------------------------
    @property
    def has_inf(self) -> bool:
        return self.style == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.style != "finite"

    @property
    def has_zero(self) -> bool:
        return self.style != "fnu"

    @property
    def has_negative_zero(self) -> bool:
        return self.style in ("ieee", "fn", "finite")

    @property
    def has_subnormals(self) -> bool:
        return self.subnormals and self.style != "fnu"

    @property
    def nan_style(self) -> str:
        """Where NaNs live: the style name ("ieee", "fn", "fnuz", "fnu") or "none"."""
        return self.style if self.has_nan else "none"

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return -self.bias if self.style == "fnu" else 1 - self.bias

    @property
    def max_mag_code(self) -> int:
        """Largest magnitude code (sign bit clear) that is a finite number."""
        em = self.exp_bits + self.man_bits
        top = (1 << em) - 1
        return {"ieee": (((1 << self.exp_bits) - 1) << self.man_bits) - 1,
                "fn": top - 1, "fnuz": top, "finite": top, "fnu": top - 1}[self.style]

    @property
    def emax(self) -> int:
        return (self.max_mag_code >> self.man_bits) - self.bias

    @property
    def max_value(self) -> float:
        return float(self._mag_values(np.array([self.max_mag_code]))[0])

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits) if self.has_subnormals else self.min_normal

    @property
    def nan_code(self) -> int:
        """The canonical NaN code encode() produces."""
        em = self.exp_bits + self.man_bits
        if self.style == "ieee":
            return (((1 << self.exp_bits) - 1) << self.man_bits) | (1 << (self.man_bits - 1))
        return {"fn": (1 << em) - 1, "fnuz": 1 << em, "fnu": (1 << em) - 1}.get(self.style, -1)

    @property
    def inf_code(self) -> int:
        """Code of +inf (ieee only; -1 otherwise); -inf sets the sign bit."""
        return ((1 << self.exp_bits) - 1) << self.man_bits if self.has_inf else -1

    # --- decode -------------------------------------------------------------------------
    def _mag_values(self, mag):
        """float64 value of finite magnitude codes (no sign)."""
        mag = np.asarray(mag, dtype=np.int64)
        m = self.man_bits
        ef = mag >> m
        mf = (mag & ((1 << m) - 1)).astype(np.float64)
        if self.style == "fnu":
            return np.ldexp(1.0 + mf / (1 << m), ef - self.bias)
        normal = np.ldexp(1.0 + mf / (1 << m), ef - self.bias)
        sub = np.ldexp(mf, self.emin - m) if self.subnormals else np.zeros_like(mf)
        return np.where(ef == 0, sub, normal)

    def _decode_codes(self, c):
        c = np.asarray(c, dtype=np.int64)
        em = self.exp_bits + self.man_bits
        if self.signed:
            neg, mag = (c >> em) & 1, c & ((1 << em) - 1)
        else:
            neg, mag = np.zeros_like(c), c
        v = self._mag_values(np.minimum(mag, self.max_mag_code))
        v = np.where(neg == 1, -v, v)
        if self.style == "ieee":
            special = (mag >> self.man_bits) == (1 << self.exp_bits) - 1
            inf = special & ((mag & ((1 << self.man_bits) - 1)) == 0)
            v = np.where(special, np.nan, v)
            v = np.where(inf, np.where(neg == 1, -np.inf, np.inf), v)
        elif self.style in ("fn", "fnu"):
            v = np.where(mag > self.max_mag_code, np.nan, v)
        elif self.style == "fnuz":
            v = np.where(c == (1 << em), np.nan, v)
        return v

    def _value_table(self):
        t = _TABLES.get(self)
        if t is None:
            t = self._decode_codes(np.arange(1 << self.bits))
            t.setflags(write=False)
            _TABLES[self] = t
        return t

    def decode(self, codes) -> np.ndarray:
        """Exact float64 values; NaN codes -> NaN, inf codes -> +-inf, DAZ zeros -> +-0."""
        c = self.check_codes(codes)
        if self.bits <= 16:
            return self._value_table()[c]
        return self._decode_codes(c)

    # --- encode -------------------------------------------------------------------------
    def encode(self, x, rounding="rne", saturate=False, seed=None) -> np.ndarray:
        """float64 -> codes, one rounding of each exact value (rules in the module docstring)."""
        check_rounding(rounding)
        x = np.asarray(x, dtype=np.float64)
        em, m = self.exp_bits + self.man_bits, self.man_bits
        neg = np.signbit(x)
        a = np.abs(x)
        nan, inf = np.isnan(x), np.isinf(x)
        fin = ~(nan | inf)
        af = np.where(fin, a, 1.0)
        _, ex = np.frexp(af)
        e = np.where(af > 0, ex.astype(np.int64) - 1, self.emin)  # af in [2**e, 2**(e+1))
        eq = np.maximum(e, self.emin)
        t = np.ldexp(af, (m - eq))                     # exact: af / 2**(eq - m)
        lo = np.floor(t)
        rem = t - lo                                   # exact, in [0, 1)
        lo = lo.astype(np.int64)
        code = ((eq - self.emin) << m) + lo
        if self.style == "fnu":
            code = code - (1 << m)
        exact = rem == 0
        rem_cmp = np.sign(rem - 0.5).astype(np.int8)
        odd = (code & 1) == 1 if m > 0 else np.ones(code.shape, dtype=bool)
        small = af < self.min_normal
        if not self.has_subnormals and self.style != "fnu":
            # candidates 0 and min_normal: remainder measured against min_normal
            rs = af / self.min_normal
            code = np.where(small, 0, code)
            exact = np.where(small, af == 0, exact)
            rem_cmp = np.where(small, np.sign(rs - 0.5), rem_cmp).astype(np.int8)
            odd = np.where(small, m == 0, odd)
            rem = np.where(small, rs, rem)
        rng = rng_for(seed) if rounding == "stochastic" else None
        up = round_up_decision(rem_cmp, exact, neg, odd, rounding, rng, rem)
        if not self.has_subnormals and self.style != "fnu":
            code = np.where(small & up, (1 << m) - 1, code)
        code = code + up
        if self.style == "fnu":
            code = np.where(small, 0, code)
        # overflow
        over = code > self.max_mag_code
        toward_zero = (rounding == "trunc") | ((rounding == "floor") & ~neg) | ((rounding == "ceil") & neg)
        if self.has_inf:
            ovf_code = self.inf_code
        elif self.has_nan:
            ovf_code = -1  # marks NaN, resolved below
        else:
            ovf_code = self.max_mag_code
        sat_mag = np.where(toward_zero | saturate, self.max_mag_code, ovf_code)
        mag = np.where(over, sat_mag, code)
        # infinities in
        inf_mag = self.max_mag_code if (saturate or not self.has_nan) else \
            (self.inf_code if self.has_inf else -1)
        mag = np.where(inf, inf_mag, mag)
        is_nan = nan | (mag < 0)
        if np.any(nan) and not self.has_nan:
            raise ValueError(f"{self.name}: NaN has no encoding in this finite-only format")
        sign = neg.astype(np.int64)
        if self.style == "fnu":
            is_nan |= (x <= 0) | neg
            sign = np.zeros_like(sign)
        if self.style == "fnuz":
            sign = np.where(mag == 0, 0, sign)
        out = (sign << em) | np.maximum(mag, 0) if self.signed else np.maximum(mag, 0)
        out = np.where(is_nan, self.nan_code, out)
        return out.astype(self.code_dtype)

    def neg(self, a) -> np.ndarray:
        """-a: flips the sign bit (exact); NaN stays NaN, fnuz zero stays +0."""
        a = self.check_codes(a)
        if not self.signed:
            raise ValueError(f"{self.name}: unsigned format has no negation")
        em = self.exp_bits + self.man_bits
        flipped = a ^ self.code_dtype.type(1 << em)
        if self.style == "fnuz":
            keep = (a == 0) | (a == (1 << em))
            return np.where(keep, a, flipped).astype(self.code_dtype)
        return flipped

    # --- arithmetic ---------------------------------------------------------------------
    def _fast(self, op, *codes):
        """float64 arithmetic then one rne encode.

        mul: the float64 product of two <= 24-bit significands is exact. add/sub: float64 is
        correctly rounded and p' = 53 >= 2p + 2 (p <= 24), so rounding it again to p bits equals
        one rounding of the exact sum (Figueroa 1995: double rounding is innocuous). fma: the
        exact product plus c is formed with TwoSum and rounded to odd in float64 (sticky bit);
        a round-to-odd value with p' >= p + 2 bits rounds to p bits exactly as the exact value.
        """
        v = [self.decode(c) for c in codes]
        with np.errstate(all="ignore"):
            if op == "mul":
                r = v[0] * v[1]
            elif op == "add":
                r = v[0] + v[1]
            elif op == "sub":
                r = v[0] - v[1]
            else:
                r = fma_round_to_odd(v[0] * v[1], v[2])
        return self.encode(r)


def fma_round_to_odd(p, c):
    """p + c rounded to odd in float64 (p, c float64 arrays; specials follow IEEE)."""
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    adjust = np.isfinite(s) & (err != 0) & (s != 0)
    if not np.any(adjust):
        return s
    bits = s.view(np.int64)
    signbit = bits & np.int64(-0x8000000000000000)
    mag = bits & np.int64(0x7FFFFFFFFFFFFFFF)
    below = np.sign(err) == np.sign(s)          # s is below the exact sum in magnitude
    t = np.where(below, mag, mag - 1)
    t = np.where((t & 1) == 0, t + 1, t)
    fixed = (signbit | t).view(np.float64)
    return np.where(adjust, fixed, s)


_TABLES: dict = {}
