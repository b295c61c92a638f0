"""Bit-exact reference number formats: integers, fixed point, minifloats, MX blocks, posits.

`parse_format(text)` gives a format object; `convert` and `dot` work across all families.
"""
from .base import NumberFormat, ROUNDING_MODES, round_shift
from .integer import FixedFormat
from .minifloat import FloatFormat
from .ops import convert, dot
from .parse import parse_format

__all__ = ["NumberFormat", "FixedFormat", "FloatFormat", "ROUNDING_MODES", "round_shift",
           "convert", "dot", "parse_format"]
