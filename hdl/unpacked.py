"""The exact intermediate value every format unit speaks: decoders produce it, encoders round it.

value = (-1)**sign * sig * 2**exp, sig an unsigned integer (not necessarily normalized), plus
class flags. Converting any format to any other is encode(dst) after decode(src).
"""
from amaranth import signed, unsigned
from amaranth.lib import data


def unpacked_layout(sig_bits: int, exp_bits: int) -> data.StructLayout:
    """Layout of an exact unpacked value.

    sign: 1 for negative (also for -0 and -inf); exp: signed power of two of sig's LSB;
    sig: integer significand (0 with `zero`); zero/inf/nan: class flags (at most one set;
    posit NaR is `nan`). When zero, inf or nan is set, exp and sig are don't-care.
    """
    return data.StructLayout({
        "sign": 1,
        "exp": signed(exp_bits),
        "sig": unsigned(sig_bits),
        "zero": 1,
        "inf": 1,
        "nan": 1,
    })


def rounding_layout(sig_bits: int, exp_bits: int) -> data.StructLayout:
    """An unpacked value with a sticky bit: the exact value lies strictly above sig*2**exp
    (in magnitude) by less than one unit of sig's LSB when `sticky` is set. Encoders take this."""
    fields = dict(unpacked_layout(sig_bits, exp_bits).members)
    fields["sticky"] = 1
    return data.StructLayout(fields)
