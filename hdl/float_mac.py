"""Minifloat multiply-accumulate PE with an exact fixed-point (Kulisch) accumulator: products are
summed without rounding, and the sum is rounded once to the output format at each `last` input.

Bit-exact against `dot(a, b, a_fmt, b_fmt, out_fmt, accumulate="exact")` of the reference.
"""
from fractions import Fraction

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats.minifloat import FloatFormat
from .float_pe import Pipeline, _format, decoder_for, encoder_cuts, encoder_for, flags_of, \
    fold_overflow, multiply_unpacked
from .float_units import register, signed_bits

MAX_ACC_BITS = 1024
EMITS = ("last", "every")
CUTS = ("output", "product", "normalized", "magnitude", "aligned", "rounded")   # `stages` order


def lsb_exponent(fmt) -> int:
    """Weight (power of two) of the smallest nonzero magnitude step of a float/fixed format."""
    return fmt.emin - fmt.man_bits if isinstance(fmt, FloatFormat) else -fmt.frac_bits


def max_units(fmt) -> int:
    """Largest finite magnitude of `fmt` in units of 2**lsb_exponent(fmt) (an exact integer)."""
    if isinstance(fmt, FloatFormat):
        return int(Fraction(fmt.max_value) / Fraction(2) ** lsb_exponent(fmt))
    return max(-fmt.raw_min, fmt.raw_max)


def kulisch_width(a_fmt, b_fmt, length) -> tuple:
    """(bits, lsb): the two's-complement accumulator that sums `length` exact products a*b with
    neither rounding nor overflow. lsb = lsb_exponent(a) + lsb_exponent(b) is the weight of
    its LSB; bits = 1 + bit_length(length * max|a| * max|b| / 2**lsb)."""
    lsb = lsb_exponent(a_fmt) + lsb_exponent(b_fmt)
    return 1 + (length * max_units(a_fmt) * max_units(b_fmt)).bit_length(), lsb


class FloatMAC(wiring.Component):
    """Dot products streamed in one product per beat: acc += a*b exactly; a beat with `last`
    completes a dot product, whose single rounding to out_fmt is streamed out, and the next
    beat starts a new one.

    a_fmt, b_fmt: float (or integer/fixed) formats; out_fmt: float format (default a_fmt).
    length: the longest dot product summed exactly (sizes the accumulator, `kulisch_width`).
    Input payload {a, b, last}; output payload: out_fmt code. emit="last" streams one result
    per `last`; emit="every" streams the rounded running sum after every beat (prefix sums).
    stages: 1 (accumulator register, combinational rounding), 2 (+ output register),
    3 (+ product register), 4 (+ normalized sum in the encoder), 5 (+ |sum| register),
    6 (+ aligned product) or 7 (+ rounded magnitude); `latency` = stages cycles from the `last`
    beat to its result.
    Specials as the reference's dot: NaN, inf*0 or +inf with -inf give NaN; an exact zero sum
    is +0 unless every product was -0.
    """

    def __init__(self, a_fmt, b_fmt=None, out_fmt=None, *, length=1024, stages=2, emit="last"):
        families = ("float", "int", "fixed")
        self.a_format = _format(a_fmt, "a_fmt", families)
        self.b_format = _format(self.a_format if b_fmt is None else b_fmt, "b_fmt", families)
        self.out_format = _format(self.a_format if out_fmt is None else out_fmt, "out_fmt", ("float",))
        if not (isinstance(length, int) and length >= 1):
            raise SpecError(f"length={length!r}: the longest dot product must be an integer >= 1")
        if not (isinstance(stages, int) and 1 <= stages <= len(CUTS) + 1):
            raise SpecError(f"stages={stages!r}: latency in cycles must be an integer in "
                            f"[1, {len(CUTS) + 1}] (registers after: accumulator, {', '.join(CUTS)})")
        if emit not in EMITS:
            raise SpecError(f"emit={emit!r}: must be one of {', '.join(EMITS)}")
        self.acc_bits, self.acc_lsb = kulisch_width(self.a_format, self.b_format, length)
        if self.acc_bits > MAX_ACC_BITS:
            raise SpecError(f"the exact accumulator for {self.a_format.name} x {self.b_format.name} "
                            f"needs {self.acc_bits} bits (at most {MAX_ACC_BITS}); reduce length")
        self.length, self.stages, self.latency, self.emit = length, stages, stages, emit
        payload = data.StructLayout({"a": self.a_format.bits, "b": self.b_format.bits, "last": 1})
        super().__init__({
            "i": In(stream.Signature(payload)),
            "o": Out(stream.Signature(self.out_format.bits)),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        cuts = CUTS[:self.stages - 1]
        pipe = Pipeline(m, advance, self.i.valid, [cut for cut in cuts if cut != "output"])

        units = []
        for role, fmt in (("a", self.a_format), ("b", self.b_format)):
            unit = m.submodules[f"decode_{role}"] = decoder_for(fmt)
            m.d.comb += unit.code.eq(self.i.payload[role])
            units.append(unit)
        product, last = pipe.cut("product", multiply_unpacked(m, units[0].value, units[1].value),
                                 self.i.payload.last)

        # Accumulate: align the exact product onto the accumulator's LSB weight and add.
        width, lsb = self.acc_bits, self.acc_lsb
        shift_max = units[0].exp_max + units[1].exp_max - lsb
        shift = Signal(range(shift_max + 1))
        m.d.comb += shift.eq(product.exp - lsb)
        aligned = Signal(width)
        m.d.comb += aligned.eq(Mux(product.zero | product.inf | product.nan, 0, product.sig << shift))
        addend, flags = Mux(product.sign, -aligned, aligned), product
        if "aligned" in cuts:
            addend, flags, last = pipe.cut("aligned", addend, flags_of(m, product, "product_flags"),
                                           last)
        acc = Signal(signed(width))
        nan, pos_inf, neg_inf = Signal(), Signal(), Signal()
        all_neg_zero = Signal()
        fresh = Signal(init=1)               # the next beat starts a new dot product
        acc_valid, acc_last = Signal(), Signal()
        with m.If(advance):
            m.d.sync += [acc_valid.eq(pipe.valid), acc_last.eq(last)]
            with m.If(pipe.valid):
                m.d.sync += [
                    acc.eq(Mux(fresh, 0, acc) + addend),
                    nan.eq(~fresh & nan | flags.nan),
                    pos_inf.eq(~fresh & pos_inf | flags.inf & ~flags.sign),
                    neg_inf.eq(~fresh & neg_inf | flags.inf & flags.sign),
                    all_neg_zero.eq((fresh | all_neg_zero) & flags.zero & flags.sign),
                    fresh.eq(last),
                ]

        # Round the accumulator once.
        magnitude = fold_overflow(self.out_format, Mux(acc[-1], -acc, acc)[:width], lsb)
        inner = [cut for cut in encoder_cuts(self.out_format) if cut in cuts]
        encoder = m.submodules.encode = encoder_for(self.out_format, len(magnitude),
                                                    signed_bits(lsb, lsb), cuts=inner)
        value = encoder.value
        is_nan = nan | (pos_inf & neg_inf)
        is_inf = (pos_inf | neg_inf) & ~is_nan
        is_zero = ~acc.any()
        zero = is_zero & ~is_nan & ~is_inf
        sign = Mux(is_inf, neg_inf, Mux(is_zero, all_neg_zero, acc[-1]))
        emit = acc_valid & (acc_last | (self.emit == "every"))
        if "magnitude" in cuts:
            magnitude, is_nan, is_inf, zero, sign, emit = register(
                m, advance, "magnitude", (magnitude, is_nan, is_inf, zero, sign, emit))
        m.d.comb += [
            value.sig.eq(magnitude),
            value.exp.eq(lsb),
            value.sticky.eq(0),
            value.nan.eq(is_nan),
            value.inf.eq(is_inf),
            value.zero.eq(zero),
            value.sign.eq(sign),
        ]
        if inner:
            m.d.comb += encoder.advance.eq(advance)
        for cut in inner:                    # the encoder registers the data; emit keeps pace
            (emit,) = register(m, advance, cut, (emit,))
        if self.stages == 1:
            m.d.comb += [self.o.valid.eq(emit), self.o.payload.eq(encoder.code)]
        else:
            with m.If(advance):
                m.d.sync += [self.o.valid.eq(emit), self.o.payload.eq(encoder.code)]
        return m
