"""Slow exact oracle: code values as Fractions straight from the bit-field definitions, and rounding
by searching the sorted list of all representable values (formats up to 16 bits).

Written independently of the vectorized code paths; tests compare the two. Specials are the
strings "nan", "+inf", "-inf"; zeros carry their sign as ("zero", negative).
"""
from __future__ import annotations

import bisect
import functools
from fractions import Fraction

from .integer import FixedFormat
from .minifloat import FloatFormat

NAN, PINF, NINF = "nan", "+inf", "-inf"


def float_value(fmt: FloatFormat, code: int):
    """Exact value of one minifloat code (Fraction, NAN, PINF or NINF); -0 is Fraction(0) with
    the sign returned by `is_negative_zero`."""
    e_bits, m_bits = fmt.exp_bits, fmt.man_bits
    if fmt.style == "fnu":
        sign, ef, mf = 0, code >> m_bits, code & ((1 << m_bits) - 1)
        if code == (1 << (e_bits + m_bits)) - 1:
            return NAN
        return (1 + Fraction(mf, 1 << m_bits)) * Fraction(2) ** (ef - fmt.bias)
    sign = code >> (e_bits + m_bits)
    ef = (code >> m_bits) & ((1 << e_bits) - 1)
    mf = code & ((1 << m_bits) - 1)
    all_e, all_m = (1 << e_bits) - 1, (1 << m_bits) - 1
    if fmt.style == "ieee" and ef == all_e:
        return NAN if mf else (NINF if sign else PINF)
    if fmt.style == "fn" and ef == all_e and mf == all_m:
        return NAN
    if fmt.style == "fnuz" and sign and ef == 0 and mf == 0:
        return NAN
    if ef == 0:
        mag = Fraction(mf, 1 << m_bits) * Fraction(2) ** (1 - fmt.bias) if fmt.subnormals else Fraction(0)
    else:
        mag = (1 + Fraction(mf, 1 << m_bits)) * Fraction(2) ** (ef - fmt.bias)
    return -mag if sign else mag


def fixed_value(fmt: FixedFormat, code: int) -> Fraction:
    raw = code - (1 << fmt.bits) if fmt.signed and code >> (fmt.bits - 1) else code
    return Fraction(raw) * Fraction(2) ** (-fmt.frac_bits)


def value(fmt, code: int):
    """Exact value of a code of any supported family (posits: the family may register one)."""
    if isinstance(fmt, FloatFormat):
        return float_value(fmt, code)
    if isinstance(fmt, FixedFormat):
        return fixed_value(fmt, code)
    fn = VALUE_FUNCS.get(fmt.family)
    if fn is None:
        raise TypeError(f"no exact oracle for family {fmt.family}")
    return fn(fmt, code)


#: family name -> function(fmt, code) -> Fraction or NAN/PINF/NINF (posit.py may add "posit")
VALUE_FUNCS: dict = {}


def is_negative_zero(fmt, code: int) -> bool:
    v = value(fmt, code)
    return v == 0 and not isinstance(v, str) and fmt.family == "float" and fmt.signed \
        and code >> (fmt.exp_bits + fmt.man_bits) == 1


@functools.lru_cache(maxsize=32)
def _float_table(fmt: FloatFormat):
    """Sorted (value, code) of non-negative finite magnitudes, one code per value (the
    canonical: exponent field 0 for DAZ zeros)."""
    pairs = {}
    em = fmt.exp_bits + fmt.man_bits
    for mag in range(1 << em):
        v = float_value(fmt, mag)
        if isinstance(v, str) or v < 0:
            continue
        pairs.setdefault(v, mag)
    return sorted(pairs.items())


def round_float(fmt: FloatFormat, x, rounding="rne", saturate=False) -> int:
    """Code of x (Fraction or special) per the minifloat module's written rules."""
    sign_shift = fmt.exp_bits + fmt.man_bits
    nan_code = fmt.nan_code
    if x == NAN:
        if not fmt.has_nan:
            raise ValueError("no NaN")
        return nan_code
    neg = x == NINF or (not isinstance(x, str) and x < 0)
    table = _float_table(fmt)
    vals = [v for v, _ in table]
    top_val, top_code = table[-1]
    # next value above max as if the exponent range continued
    ulp = Fraction(2) ** ((top_code >> fmt.man_bits) - fmt.bias - fmt.man_bits)
    virtual = top_val + ulp
    toward_zero = rounding == "trunc" or (rounding == "floor" and not neg) or (rounding == "ceil" and neg)

    def overflow_code():
        if saturate or toward_zero or not fmt.has_nan:
            return top_code
        return fmt.inf_code if fmt.has_inf else -1

    if fmt.style == "fnu" and (neg or x == 0):
        return nan_code
    if isinstance(x, str):
        mag_code = top_code if (saturate or not fmt.has_nan) else (fmt.inf_code if fmt.has_inf else -1)
    else:
        a = abs(x)
        if a > virtual or (a == virtual):
            mag_code = overflow_code() if a > top_val else top_code
        else:
            i = bisect.bisect_right(vals, a) - 1
            if i < 0:                         # fnu: below the smallest value
                return table[0][1]
            lo_v, lo_c = table[i]
            if lo_v == a:
                mag_code = lo_c
            else:
                hi_v, hi_c = (table[i + 1] if i + 1 < len(table) else (virtual, None))
                up = _decide(a - lo_v, hi_v - lo_v, lo_c, hi_c, fmt, neg, rounding)
                mag_code = (hi_c if hi_c is not None else overflow_code()) if up else lo_c
        if fmt.style == "fnu" and a < table[0][0]:
            mag_code = table[0][1]
    if mag_code == -1:
        return nan_code
    if not fmt.signed:
        return mag_code
    if fmt.style == "fnuz" and mag_code == 0:
        return 0
    return mag_code | (int(neg) << sign_shift)


def _decide(rem, step, lo_c, hi_c, fmt, neg, rounding):
    """Step up in magnitude? rem/step in (0, 1); ties per the written rules."""
    half = Fraction(1, 2) * step
    if rounding == "trunc":
        return False
    if rounding == "away":
        return True
    if rounding == "floor":
        return neg
    if rounding == "ceil":
        return not neg
    if rem != half:
        return rem > half
    if rounding == "rne":
        if fmt.man_bits == 0:
            return True                     # no even digit: ties to the larger magnitude
        if lo_c == 0 and not fmt.has_subnormals:
            return False                    # DAZ: tie between 0 and min_normal goes to 0
        return lo_c % 2 == 1
    return {"half_away": True, "half_zero": False, "half_up": not neg, "half_down": neg}[rounding]


def round_fixed(fmt: FixedFormat, x: Fraction, rounding=None, saturate=None) -> int:
    """Code of x per ap_fixed quantization then overflow (Fractions only)."""
    rnd, ovf = fmt.modes(rounding, saturate)
    t = x * Fraction(2) ** fmt.frac_bits
    fl = t.numerator // t.denominator
    rem = t - fl
    if rem == 0:
        raw = fl
    else:
        half = Fraction(1, 2)
        raw = fl + {
            "floor": 0, "ceil": 1, "trunc": int(t < 0), "away": int(t > 0),
            "rne": int(rem > half or (rem == half and fl % 2 == 1)),
            "half_up": int(rem >= half), "half_down": int(rem > half),
            "half_away": int(rem > half or (rem == half and t > 0)),
            "half_zero": int(rem > half or (rem == half and t < 0)),
        }[rnd]
    lo, hi = fmt.raw_min, fmt.raw_max
    if ovf == "WRAP":
        base = -(1 << (fmt.bits - 1)) if fmt.signed else 0
        raw = (raw - base) % (1 << fmt.bits) + base
    elif ovf == "SAT":
        raw = min(max(raw, lo), hi)
    elif ovf == "SAT_SYM":
        raw = min(max(raw, -hi if fmt.signed else lo), hi)
    elif ovf == "SAT_ZERO":
        raw = raw if lo <= raw <= hi else 0
    return raw & ((1 << fmt.bits) - 1)


def round_value(fmt, x, rounding=None, saturate=None) -> int:
    """Code of the exact value x in fmt (floats: rounding default rne, non-saturating)."""
    if isinstance(fmt, FloatFormat):
        return round_float(fmt, x, rounding or "rne", bool(saturate))
    return round_fixed(fmt, x, rounding, saturate)


def _neg_zero(fmt, x_is_neg_zero):
    return x_is_neg_zero and isinstance(fmt, FloatFormat) and fmt.has_negative_zero


def op(fmt, name, *codes) -> int:
    """Exact mul/add/sub/fma of codes, rounded once by round_value (IEEE special rules)."""
    vals = [value(fmt, c) for c in codes]
    negz = [is_negative_zero(fmt, c) for c in codes]
    if any(v == NAN for v in vals):
        return fmt.nan_code
    r, rneg0 = _apply(name, vals, negz)
    if r == NAN and isinstance(fmt, FloatFormat) and not fmt.has_nan:
        raise ValueError("NaN result in a finite-only format")
    if r == NAN:
        return fmt.nan_code
    code = round_value(fmt, r)
    if r == 0 and _neg_zero(fmt, rneg0):
        code |= 1 << (fmt.exp_bits + fmt.man_bits)
    return code


def _apply(name, vals, negz):
    """Exact result (Fraction or special) and whether a zero result is -0 (IEEE 754 §6.3)."""
    def mul(a, an, b, bn):
        if isinstance(a, str) or isinstance(b, str):
            if a == 0 or b == 0:
                return NAN, False
            sa = a == NINF or (not isinstance(a, str) and a < 0) or (a == 0 and an)
            sb = b == NINF or (not isinstance(b, str) and b < 0) or (b == 0 and bn)
            return (NINF if sa != sb else PINF), False
        neg = (a < 0 or (a == 0 and an)) != (b < 0 or (b == 0 and bn))
        return a * b, (a * b == 0 and neg)

    def add(a, an, b, bn):
        if isinstance(a, str) or isinstance(b, str):
            if {a, b} == {PINF, NINF}:
                return NAN, False
            return (a if isinstance(a, str) else b), False
        s = a + b
        return s, (s == 0 and an and bn and a == 0 and b == 0)

    if name == "mul":
        return mul(vals[0], negz[0], vals[1], negz[1])
    if name == "add":
        return add(vals[0], negz[0], vals[1], negz[1])
    if name == "sub":
        b = vals[1]
        nb = {PINF: NINF, NINF: PINF}.get(b, b) if isinstance(b, str) else -b
        return add(vals[0], negz[0], nb, not negz[1] if b == 0 else False)
    p, pn = mul(vals[0], negz[0], vals[1], negz[1])
    return add(p, pn, vals[2], negz[2])

