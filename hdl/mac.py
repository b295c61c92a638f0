"""Integer multiply-accumulate processing element with valid/ready streams.

Activations and weights are integer formats of independent widths; the accumulator is exact by
default (never overflows for `length` accumulations) and wraps two's-complement when narrower.
"""
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format

MAX_OPERAND_BITS = 16
MAX_ACC_BITS = 64
MAX_STAGES = 8


def int_shape(fmt):
    """Amaranth shape of an integer format's raw value."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def interval_product(a_lo, a_hi, w_lo, w_hi):
    """(min, max) of a*w for a in [a_lo, a_hi], w in [w_lo, w_hi]: the extremes are corners."""
    corners = [a * w for a in (a_lo, a_hi) for w in (w_lo, w_hi)]
    return min(corners), max(corners)


def product_range(a_fmt, w_fmt):
    """(min, max) of the exact product a*w over both operand ranges."""
    return interval_product(a_fmt.raw_min, a_fmt.raw_max, w_fmt.raw_min, w_fmt.raw_max)


def holding_format(lo, hi):
    """The narrowest integer format that holds every value in [lo, hi]."""
    if lo >= 0:
        return parse_format(f"uint{max(1, hi.bit_length())}")
    bits = max((-lo - 1).bit_length(), hi.bit_length()) + 1
    return parse_format(f"int{bits}")


def exact_accumulator(a_fmt, w_fmt, length):
    """The narrowest accumulator that sums `length` products a*w without overflow."""
    lo, hi = product_range(a_fmt, w_fmt)
    return holding_format(min(0, lo * length), hi * length)


def _integer_format(fmt, role):
    fmt = parse_format(fmt, role)
    if fmt.family != "int":
        raise SpecError(f"{role}={fmt.name}: the integer MAC takes integer formats (e.g. int8, uint4)")
    return fmt


class IntegerMAC(wiring.Component):
    """acc <- (clear ? 0 : acc) + a * w for every accepted input; each sum is streamed out.

    Input stream payload: `a`, `w` (raw integers of their formats) and `clear` (start a new sum
    with this product). Output stream payload: the accumulator after that input, `stages` cycles
    after acceptance. A stalled output (valid and not ready) holds the whole pipeline.
    """

    def __init__(self, a, w, acc=None, *, length=1024, stages=1):
        self.a_format = _integer_format(a, "a")
        self.w_format = _integer_format(w, "w")
        for role, fmt in (("a", self.a_format), ("w", self.w_format)):
            if not 1 <= fmt.bits <= MAX_OPERAND_BITS:
                raise SpecError(f"{role}={fmt.name}: operand width must be 1..{MAX_OPERAND_BITS} bits")
        if not (isinstance(length, int) and length >= 1):
            raise SpecError(f"length={length}: the number of accumulations must be an integer >= 1")
        if not (isinstance(stages, int) and 1 <= stages <= MAX_STAGES):
            raise SpecError(f"stages={stages}: pipeline depth must be 1..{MAX_STAGES}")
        lo, hi = product_range(self.a_format, self.w_format)
        if acc is None:
            self.acc_format = exact_accumulator(self.a_format, self.w_format, length)
        else:
            self.acc_format = _integer_format(acc, "acc")
            if not self.acc_format.raw_min <= lo <= hi <= self.acc_format.raw_max:
                need = holding_format(lo, hi)
                raise SpecError(
                    f"acc={self.acc_format.name} is narrower than the product "
                    f"{self.a_format.name} x {self.w_format.name} (range {lo}..{hi}); "
                    f"use at least {need.name}, or omit acc for an exact accumulator")
        if self.acc_format.bits > MAX_ACC_BITS:
            raise SpecError(f"acc={self.acc_format.name}: accumulator width must be at most "
                            f"{MAX_ACC_BITS} bits; reduce length or the operand widths")
        self.length = length
        self.stages = stages
        self.latency = stages
        payload = data.StructLayout({
            "a": int_shape(self.a_format),
            "w": int_shape(self.w_format),
            "clear": 1,
        })
        super().__init__({
            "i": In(stream.Signature(payload)),
            "o": Out(stream.Signature(int_shape(self.acc_format))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        # Registers before the accumulator: (stages - 1) of them, the last holding the product.
        valid, a, w, clear = self.i.valid, self.i.payload.a, self.i.payload.w, self.i.payload.clear
        product = a * w
        for index in range(self.stages - 1):
            is_product_stage = index == self.stages - 2
            next_valid = Signal(name=f"valid_{index}")
            next_clear = Signal(name=f"clear_{index}")
            with m.If(advance):
                m.d.sync += [next_valid.eq(valid), next_clear.eq(clear)]
            valid, clear = next_valid, next_clear
            if is_product_stage:
                product_reg = Signal.like(product, name="product")
                with m.If(advance):
                    m.d.sync += product_reg.eq(product)
                product = product_reg
            else:
                a_reg, w_reg = Signal.like(a, name=f"a_{index}"), Signal.like(w, name=f"w_{index}")
                with m.If(advance):
                    m.d.sync += [a_reg.eq(a), w_reg.eq(w)]
                a, w = a_reg, w_reg
                product = a * w

        acc = Signal(int_shape(self.acc_format))
        m.d.comb += self.o.payload.eq(acc)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(valid)
            with m.If(valid):
                m.d.sync += acc.eq(Mux(clear, 0, acc) + product)
        return m
