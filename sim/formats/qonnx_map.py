"""QONNX quantizer attributes -> forma formats and rounding modes (used by the QONNX importer).

The mapping reproduces what qonnx 1.0's executor computes, checked bit for bit in the tests.
"""
from __future__ import annotations

from forma.errors import SpecError

from .minifloat import FloatFormat, default_bias
from .parse import parse_format

#: QONNX rounding_mode (IntQuant/Quant, Trunc, FloatQuant) -> base.ROUNDING_MODES name
QONNX_ROUNDING = {
    "ROUND": "rne", "HALF_EVEN": "rne", "CEIL": "ceil", "FLOOR": "floor", "UP": "away",
    "DOWN": "trunc", "HALF_UP": "half_away", "HALF_DOWN": "half_zero",
}


def qonnx_rounding(mode: str) -> str:
    """forma rounding name for a QONNX rounding_mode string (case-insensitive)."""
    key = str(mode).upper()
    if key not in QONNX_ROUNDING:
        raise SpecError(f"QONNX rounding_mode {mode!r} must be one of {', '.join(QONNX_ROUNDING)}")
    return QONNX_ROUNDING[key]


def from_qonnx_intquant(bitwidth, signed, narrow):
    """Integer format of a QONNX IntQuant/Quant node (values before the scale/zero point).

    The node saturates: encode with saturate=True and rounding=qonnx_rounding(mode).
    Signed 1-bit IntQuant is bipolar {-1, +1} in QONNX, which no integer format holds: SpecError.
    """
    b = int(bitwidth)
    if b != bitwidth or not 1 <= b <= 32:
        raise SpecError(f"QONNX IntQuant bitwidth {bitwidth}: must be an integer in [1, 32]")
    if b == 1 and signed:
        raise SpecError("QONNX IntQuant bitwidth 1 signed: this is bipolar {-1, +1}, not int1 "
                        "({-1, 0}); use a 2-bit narrow format (int2_narrow) for {-1, 0, 1}")
    return parse_format(f"{'' if signed else 'u'}int{b}{'_narrow' if narrow else ''}")


def from_qonnx_floatquant(exponent_bitwidth, mantissa_bitwidth, exponent_bias=None, max_val=None,
                          has_inf=False, has_nan=False, has_subnormal=True):
    """Minifloat format of a QONNX FloatQuant node (values before the scale).

    qonnx 1.0's executor always produces subnormals (its has_subnormal attribute is documented
    as informative only), so the format has subnormals whatever has_subnormal says. The special-
    value style follows from max_val: the largest finite value of style ieee (has_inf), fn (has_nan,
    no inf), fnuz (has_nan, all codes finite but -0) or finite (neither). Encode with
    saturate=bool(saturation) and rounding=qonnx_rounding(rounding_mode).
    """
    e, m = int(exponent_bitwidth), int(mantissa_bitwidth)
    styles = ["ieee"] if has_inf else (["fn", "fnuz"] if has_nan else ["finite"])
    candidates = []
    for style in styles:
        bias = default_bias(e, "ieee") if exponent_bias is None else int(exponent_bias)
        try:
            fmt = FloatFormat(e, m, bias, style, True)
        except SpecError:
            continue
        candidates.append(fmt)
        if max_val is None or float(max_val) == fmt.max_value:
            return fmt
    allowed = ", ".join(f"{f.max_value:g} ({f.style})" for f in candidates)
    raise SpecError(f"QONNX FloatQuant e{e}m{m} bias {exponent_bias}: max_val {max_val} must be one "
                    f"of {allowed or 'none (no valid format)'}")
