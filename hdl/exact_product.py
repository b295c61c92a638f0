"""Exact products of minifloat/posit codes as signed fixed-point words, for MAC arrays.

Operands are decoded once at the array's edge; each PE multiplies significands and shifts the
product onto the accumulator's LSB, so every sum is an exact integer addition; one rounding at the end.

A column word (`ExactArithmetic.word_bits` bits) is the accumulator, two's complement in units of
2**lsb, followed by four flags that combine by OR: nan, pos_inf, neg_inf and `plus` (some product
was not -0). The all-zero word is the empty sum. Rounded once it gives `sim.formats.dot(...,
accumulate="exact")`: NaN from a NaN, inf * 0 or +inf + -inf; an infinity's sign; else the exact
sum, rounded; an exact zero sum is -0 only when no product set `plus`.
"""
from fractions import Fraction

import numpy as np
from amaranth import Cat, Const, Mux, Signal, signed, unsigned
from amaranth.lib import data

from ..errors import SpecError
from ..sim.formats import parse_format
from ..sim.formats.minifloat import FloatFormat
from .float_pe import decoder_for, encoder_for, fold_overflow, unit_ports
from .float_units import leading_zeros, signed_bits
from .hard_multiplier import LATENCY, registered_product
from .pipeline import data_register, delay

FAMILIES = ("float", "posit")
FLAGS = ("nan", "pos_inf", "neg_inf", "plus")
MAX_ACC_BITS = 256


def exact_format(fmt, role):
    """The float/posit format named by `fmt`; SpecError naming `role` for any other."""
    fmt = parse_format(fmt, role)
    if fmt.family not in FAMILIES:
        raise SpecError(f"{role}={fmt.name}: exact arrays take minifloat or posit formats "
                        f"(e.g. float8_e4m3fn, posit(8,0))")
    if isinstance(fmt, FloatFormat) and not fmt.has_zero:
        raise SpecError(f"{role}={fmt.name}: an array operand needs a zero code to pad tiles "
                        f"with; {fmt.name} has none (use it as an MX scale, not an element)")
    return fmt


def value_grid(fmt):
    """(lsb, units): every finite value of `fmt` is a multiple of 2**lsb, at most `units` of them."""
    if isinstance(fmt, FloatFormat):
        lsb = fmt.emin - fmt.man_bits
        return lsb, int(Fraction(fmt.max_value) / Fraction(2) ** lsb)
    return -fmt.max_scale, 1 << (2 * fmt.max_scale)          # posits: multiples of minpos


def exact_width(a_fmt, w_fmt, length):
    """(bits, lsb) of the two's-complement accumulator that sums `length` products exactly."""
    (lsb_a, units_a), (lsb_w, units_w) = value_grid(a_fmt), value_grid(w_fmt)
    return 1 + (length * units_a * units_w).bit_length(), lsb_a + lsb_w


def pad_codes(a_fmt, w_fmt):
    """(a, w) codes that pad a reduction: a product that leaves every sum, special and zero sign
    unchanged. That is 0 times -0 where a format has a -0, else 0 times -1 where one has a -1
    (posits: a zero with the sign bit set, which sets no `plus` either), else 0 times 0."""
    for a_neg, fmt in ((False, w_fmt), (True, a_fmt)):
        if isinstance(fmt, FloatFormat) and fmt.has_negative_zero:
            negative_zero = 1 << (fmt.bits - 1)
            return (negative_zero, 0) if a_neg else (0, negative_zero)
    for a_neg, fmt in ((False, w_fmt), (True, a_fmt)):
        minus_one = fmt.encode(np.array([-1.0]), saturate=True)
        if fmt.decode(minus_one)[0] == -1.0:
            return (int(minus_one[0]), 0) if a_neg else (0, int(minus_one[0]))
    return 0, 0


class ExactArithmetic:
    """The exact datapath of an array over a x w with `length`-product sums and optional `out`.

    Edge decoders give `operand_layout` values (sign, masked significand, exponent offset above
    the decoder's least exponent, class flags); `product` turns two of them into a column word
    part after `latency` registered cycles; `add` sums words; `round` gives out codes.
    """

    latency = LATENCY + 1

    def __init__(self, a, w, out=None, acc=None, *, length):
        self.a_format, self.w_format = exact_format(a, "a"), exact_format(w, "w")
        self.out_format = None if out is None else exact_format(out, "out")
        self.acc_bits, self.lsb = exact_width(self.a_format, self.w_format, length)
        if acc is not None:
            bits = _acc_bits(acc)
            if bits < self.acc_bits:
                raise SpecError(f"acc={acc}: {length} exact products {self.a_format.name} x "
                                f"{self.w_format.name} need a {self.acc_bits}-bit accumulator; "
                                f"use acc=int{self.acc_bits} or wider, or lower length")
            self.acc_bits = bits
        if self.acc_bits > MAX_ACC_BITS:
            raise SpecError(f"length={length}: the exact accumulator for {self.a_format.name} x "
                            f"{self.w_format.name} would need {self.acc_bits} bits (at most "
                            f"{MAX_ACC_BITS}); lower length or use narrower formats")
        self.word_bits = self.acc_bits + len(FLAGS)
        self.units = [decoder_for(fmt) for fmt in (self.a_format, self.w_format)]
        for unit in self.units:
            unit._MustUse__silence = True    # templates for widths; each edge builds its own
        self.layouts = [self._operand_layout(unit) for unit in self.units]
        # Product LSB weighs 2**(least decoder exponents); drop the bits below self.lsb (zeros).
        self.drop = sum(_least_exponent(u) for u in self.units)
        self.drop = self.lsb - self.drop

    @staticmethod
    def _operand_layout(unit):
        span = _greatest_exponent(unit) - _least_exponent(unit)
        return data.StructLayout({"sign": 1, "sig": unit.sig_bits, "offset": range(span + 1),
                                  "nan": 1, "inf": 1, "zero": 1})

    def operand_bits(self, role):
        return self.layouts["aw".index(role)].size

    def decode(self, m, role, code, name):
        """The edge decoding of one `role` ("a" or "w") code as plain bits (operand_layout)."""
        index = "aw".index(role)
        unit = decoder_for((self.a_format, self.w_format)[index])
        m.submodules[name] = unit
        code_port, value = unit_ports(unit)
        out = Signal(self.layouts[index], name=f"{name}_value")
        special = value.zero | value.nan | value.inf
        m.d.comb += [code_port.eq(code),
                     out.sign.eq(value.sign), out.sig.eq(Mux(special, 0, value.sig)),
                     out.offset.eq(value.exp - _least_exponent(unit)),
                     out.nan.eq(value.nan), out.inf.eq(value.inf), out.zero.eq(value.zero)]
        return out.as_value()

    def product(self, m, advance, a_bits, w_bits, name, platform=None):
        """The column word part of a * w, `latency` registered cycles after its operands: the
        significands multiply in a hard multiplier's pipeline (`hard_multiplier`) while the
        exponent sum and flags wait beside it, then the product is shifted and signed."""
        a = data.View(self.layouts[0], a_bits)
        w = data.View(self.layouts[1], w_bits)
        nan = a.nan | w.nan | (a.inf & w.zero) | (w.inf & a.zero)
        inf = (a.inf | w.inf) & ~nan
        sign = a.sign ^ w.sign
        zero = (a.zero | w.zero) & ~nan
        beside = Cat(a.offset + w.offset, sign, nan, inf & ~sign, inf & sign, ~(zero & sign))
        sig = registered_product(m, advance, a.sig, w.sig, f"{name}_sig", platform)
        beside = delay(m, advance, beside, LATENCY, f"{name}_beside", data=True)
        shift_bits = max(len(a.offset), len(w.offset)) + 1
        shift, sign, flags = beside[:shift_bits], beside[shift_bits], beside[shift_bits + 1:]
        aligned = Cat((sig << shift)[self.drop:], Const(0, self.acc_bits))
        aligned = aligned[:self.acc_bits].as_signed()
        part = data_register(unsigned(self.word_bits), name)
        with m.If(advance):
            m.d.sync += part.eq(Cat(Mux(sign, -aligned, aligned)[:self.acc_bits], flags))
        return part

    def add(self, x, y):
        """The word of the exact sum of words x and y (accumulators add, flags OR)."""
        n = self.acc_bits
        return Cat((x[:n] + y[:n])[:n], x[n:] | y[n:])

    round_latency = 3

    def round(self, m, advance, word, name):
        """The out_format code of a column word, one rounding, `round_latency` registered cycles
        later: magnitude (the bits past the out format's range folded, `fold_overflow`) and
        class; normalized to the out format's precision plus two bits with the rest folded into
        a sticky bit (no rounding yet); then the encoder."""
        n, lsb, fmt = self.acc_bits, self.lsb, self.out_format
        acc = word[:n].as_signed()
        nan_flag, pos_inf, neg_inf, plus = (word[n + i] for i in range(len(FLAGS)))
        is_nan = nan_flag | (pos_inf & neg_inf)
        is_inf = (pos_inf | neg_inf) & ~is_nan
        is_zero = ~acc.any()
        classes = Cat(is_nan, is_inf, is_zero & ~is_nan & ~is_inf,
                      Mux(is_inf, neg_inf, Mux(is_zero, ~plus, acc[-1])))
        folded = fold_overflow(fmt, Mux(acc[-1], -acc, acc)[:n], lsb)
        width = len(folded)
        magnitude = data_register(width, f"{name}_magnitude")
        classes = delay(m, advance, classes, 1, f"{name}_classes", data=True)
        with m.If(advance):
            m.d.sync += magnitude.eq(folded)

        precision = fmt.man_bits + 1 if isinstance(fmt, FloatFormat) else fmt.frac_bits + 1
        keep = min(width, precision + 2)
        exp_bits = signed_bits(lsb - keep, lsb + width - keep)
        lz = leading_zeros(magnitude)
        normalized = (magnitude << lz)[:width]
        top, sticky = data_register(keep, f"{name}_top"), data_register(1, f"{name}_sticky")
        exp = data_register(signed(exp_bits), f"{name}_exp")
        classes = delay(m, advance, classes, 1, f"{name}_classes_n", data=True)
        with m.If(advance):
            m.d.sync += [top.eq(normalized[width - keep:]),
                         sticky.eq(normalized[:width - keep].any()),
                         exp.eq(lsb + width - keep - lz)]

        encoder = encoder_for(fmt, keep, exp_bits)
        m.submodules[name] = encoder
        value, code = unit_ports(encoder)
        m.d.comb += [value.sig.eq(top), value.exp.eq(exp), value.sticky.eq(sticky),
                     value.nan.eq(classes[0]), value.inf.eq(classes[1]),
                     value.zero.eq(classes[2]), value.sign.eq(classes[3])]
        return delay(m, advance, code, 1, f"{name}_code", data=True)


def _least_exponent(unit):
    return unit.exp_min if hasattr(unit, "exp_min") else -unit.format.max_scale - unit.format.frac_bits


def _greatest_exponent(unit):
    return unit.exp_max if hasattr(unit, "exp_max") else unit.format.max_scale - unit.format.frac_bits


def _acc_bits(acc):
    text = acc if isinstance(acc, str) else getattr(acc, "name", str(acc))
    if text.startswith("int") and text[3:].isdigit():
        return int(text[3:])
    raise SpecError(f"acc={text}: an exact array's accumulator is given as intN (its width in "
                    f"bits), or omitted for the narrowest exact one")
