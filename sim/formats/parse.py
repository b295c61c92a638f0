"""Format strings -> cached format objects (`parse_format`), one parser per family.

Grammar per family: integer.py, minifloat.py, mx.py and posit.py docstrings.
"""
from __future__ import annotations

import functools
import re

from forma.errors import SpecError

from .base import NumberFormat

EXAMPLES = ("int8", "uint4", "int8_narrow", "fixed<8,3>", "ufixed<16,8,RND,SAT>", "float8_e4m3fn",
            "float8_e5m2", "bfloat16", "float8_e4m3_b11_fnuz_nosub", "mxfp8_e4m3", "mxfp4",
            "nvfp4", "posit(16,1)")

_INT = re.compile(r"(u?)int(\d+)(_narrow)?")
_FIXED = re.compile(r"(?:ap_)?(u?)fixed<([^>]*)>")
_FLOAT = re.compile(r"float(\d+)_e(\d+)m(\d+)((?:_[a-z0-9]+)*)")


def _parse_int(text):
    mt = _INT.fullmatch(text)
    if not mt:
        return None
    from .integer import FixedFormat
    bits = int(mt.group(2))
    if not 1 <= bits <= 64:
        raise SpecError(f"{text}: integer width ({bits}) must be in [1, 64]")
    narrow = bool(mt.group(3))
    return FixedFormat(bits, bits, signed=not mt.group(1), narrow=narrow, quant="RND_CONV",
                       overflow="SAT" if narrow else "WRAP")


def _parse_fixed(text):
    mt = _FIXED.fullmatch(text)
    if not mt:
        return None
    from .integer import AP_OVERFLOW, AP_QUANT, FixedFormat
    parts = [p.strip() for p in mt.group(2).split(",")]
    if not 2 <= len(parts) <= 4:
        raise SpecError(f"{text}: expected fixed<W,I[,Q[,O]]> with 2 to 4 parameters, got {len(parts)}")
    try:
        w, i = int(parts[0]), int(parts[1])
    except ValueError:
        raise SpecError(f"{text}: W and I must be integers (e.g. fixed<8,3>)") from None
    modes = [p.upper().removeprefix("AP_") for p in parts[2:]]
    quant = modes[0] if modes else "TRN"
    overflow = modes[1] if len(modes) > 1 else "WRAP"
    if quant not in AP_QUANT:
        raise SpecError(f"{text}: quantization mode {parts[2]!r} must be one of {', '.join(AP_QUANT)}")
    if overflow not in AP_OVERFLOW:
        raise SpecError(f"{text}: overflow mode {parts[3]!r} must be one of {', '.join(AP_OVERFLOW)}")
    if not 1 <= w <= 64:
        raise SpecError(f"{text}: width W ({w}) must be in [1, 64]")
    if not w - 64 <= i <= w:
        raise SpecError(f"{text}: integer bits I ({i}) must be in [{w - 64}, W={w}] "
                        "(I > W would put the LSB above 1)")
    return FixedFormat(w, i, signed=not mt.group(1), quant=quant, overflow=overflow)


def _parse_float(text):
    from .minifloat import NAMED, STYLES, FloatFormat, default_bias
    if text in NAMED:
        e, m, b, style, sub = NAMED[text]
        return FloatFormat(e, m, b, style, sub)
    mt = _FLOAT.fullmatch(text)
    if not mt:
        return None
    n, e, m = int(mt.group(1)), int(mt.group(2)), int(mt.group(3))
    style, bias, sub = "ieee", None, True
    for opt in filter(None, mt.group(4).split("_")):
        if opt in STYLES:
            style = opt
        elif opt == "nosub":
            sub = False
        elif re.fullmatch(r"b-?\d+", opt):
            bias = int(opt[1:])
        else:
            raise SpecError(f"{text}: option {opt!r} must be b<bias>, nosub or a style "
                            f"({', '.join(STYLES)})")
    signed = style != "fnu"
    if e + m != n - int(signed):
        want = "bits" if not signed else "bits-1"
        raise SpecError(f"{text}: exponent+mantissa bits ({e + m}) must be {want} ({n - int(signed)})")
    if not 1 <= e <= 8:
        raise SpecError(f"{text}: exponent bits ({e}) must be in [1, 8]")
    return FloatFormat(e, m, default_bias(e, style) if bias is None else bias, style, sub)


def _parse_mx(text):
    from .mx import parse_mx
    return parse_mx(text)


def _parse_posit(text):
    try:
        from .posit import parse_posit
    except ImportError:
        if text.startswith("posit"):
            raise SpecError(f"{text}: posit formats are not available in this build") from None
        return None
    return parse_posit(text)


PARSERS = [_parse_int, _parse_fixed, _parse_float, _parse_mx, _parse_posit]


@functools.lru_cache(maxsize=None)
def _parse(text: str) -> NumberFormat:
    for parser in PARSERS:
        fmt = parser(text)
        if fmt is not None:
            return fmt
    raise SpecError(f"unknown number format {text!r}; valid examples: {', '.join(EXAMPLES)}")


def parse_format(text, role=None) -> NumberFormat:
    """Format object for a spelling such as "int8", "fixed<8,3>", "float8_e4m3fn", "mxfp4".

    Objects pass through unchanged; results are cached (same text -> same object).
    SpecError (a ValueError) names the bad part and the allowed range, prefixed with `role=`
    when the format is the value of a named parameter (e.g. `w=int0: ...`).
    """
    if isinstance(text, NumberFormat):
        return text
    if not isinstance(text, str):
        raise SpecError(f"format must be a string such as 'int8', got {type(text).__name__}")
    if role is None:
        return _parse(text.strip().replace(" ", ""))
    try:
        return _parse(text.strip().replace(" ", ""))
    except SpecError as error:
        message = str(error)
        raise SpecError(f"{role}={message}" if message.startswith(text) else
                        f"{role}={text}: {message}") from None
