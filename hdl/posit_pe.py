"""Posit(n, es) processing elements: multiplier, adder, fused multiply-add and an exact quire MAC.

Each is a valid/ready stream Component taking raw codes and returning raw codes, bit-exact with
forma.sim.formats.posit (one RNE rounding); `stages` sets the latency, a stalled output holds all.
"""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from .posit_units import (decode, decode_magnitude, normalize, posit_format, posit_magnitude,
                          round_to_posit, shift_right_sticky, wire)


class _Pipeline:
    """Registers a datapath at the named boundaries in `cuts`; every register moves on `advance`."""

    def __init__(self, m, advance, valid, cuts):
        self.m, self.advance, self.valid, self.cuts = m, advance, valid, cuts

    def boundary(self, name, values):
        """values (a dict of Values) after boundary `name`: registered there if it is a cut."""
        if name not in self.cuts:
            return values
        registered = {}
        with self.m.If(self.advance):
            valid = Signal(name=f"{name}_valid")
            self.m.d.sync += valid.eq(self.valid)
            for key, value in values.items():
                reg = Signal(value.shape(), name=f"{name}_{key}")
                self.m.d.sync += reg.eq(value)
                registered[key] = reg
        self.valid = valid
        return registered


class _PositPE(wiring.Component):
    """Common frame: format and stages validation, payload layout, the stall rule, the output register.

    Subclasses name their register boundaries in BOUNDARIES (most useful first; stages - 1 of them
    get registers) and compute the result code in `datapath(m, pipeline, payload)`.
    """

    OPERANDS = ("a", "b")
    BOUNDARIES = ()
    EXTRA_FIELDS = {}

    def __init__(self, fmt, *, stages=1):
        self.format = posit_format(fmt)
        self.a_format = self.b_format = self.out_format = self.format
        most = len(self.BOUNDARIES) + 1
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= most:
            raise SpecError(f"stages={stages!r}: the {type(self).__name__} latency must be 1..{most} cycles")
        self.stages = self.latency = stages
        self.cuts = set(self.BOUNDARIES[:stages - 1])
        payload = data.StructLayout({**{name: self.format.n for name in self.OPERANDS}, **self.EXTRA_FIELDS})
        super().__init__({"i": In(stream.Signature(payload)), "o": Out(stream.Signature(self.format.n))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipeline = _Pipeline(m, advance, self.i.valid, self.cuts)
        code = self.datapath(m, pipeline, self.i.payload)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(pipeline.valid), self.o.payload.eq(code)]
        return m


class PositMultiplier(_PositPE):
    """o = a × b on posit codes, one RNE rounding (= PositFormat.mul); NaR if either is NaR.

    Payload {a, b} (a in the low bits); latency `stages` in 1..5 cycles.
    """

    BOUNDARIES = ("product", "decoded", "rounding", "magnitude")

    def datapath(self, m, pipeline, payload):
        fmt, f = self.format, self.format.frac_bits
        x = pipeline.boundary("magnitude", {
            **{f"sign_{r}": payload[r][fmt.n - 1] for r in "ab"},
            **{f"mag_{r}": posit_magnitude(m, payload[r], fmt.n, f"mag_{r}")[1] for r in "ab"}})
        a, b = (decode_magnitude(m, fmt, x[f"mag_{r}"], f"dec_{r}") for r in "ab")
        x = pipeline.boundary("decoded", {
            "sign": x["sign_a"] ^ x["sign_b"], "scale": a["scale"] + b["scale"],
            "sig_a": Cat(a["frac"], 1), "sig_b": Cat(b["frac"], 1),
            "zero": a["zero"] | b["zero"], "nar": a["nar"] | b["nar"]})
        product = wire(m, x["sig_a"] * x["sig_b"], "product")   # 2f + 2 bits, in [2**2f, 2**(2f+2))
        carry = product[2 * f + 1]
        x = pipeline.boundary("product", {
            "sign": x["sign"], "scale": x["scale"] + carry, "zero": x["zero"], "nar": x["nar"],
            "frac": Mux(carry, product[:2 * f + 1], Cat(Const(0, 1), product[:2 * f]))})
        return _round(m, pipeline, fmt, x)


class PositAdder(_PositPE):
    """o = a + b on posit codes, one RNE rounding (= PositFormat.add); NaR if either is NaR.

    Payload {a, b}; latency `stages` in 1..6 cycles. The larger magnitude is found on the codes
    (posits order like integers); the smaller is aligned with three extra bits and a jammed sticky.
    """

    BOUNDARIES = ("sum", "decoded", "rounding", "aligned", "magnitude")

    def datapath(self, m, pipeline, payload):
        fmt = self.format
        sign_a, mag_a = posit_magnitude(m, payload.a, fmt.n, "mag_a")
        sign_b, mag_b = posit_magnitude(m, payload.b, fmt.n, "mag_b")
        x = pipeline.boundary("magnitude", dict(sign_a=sign_a, mag_a=mag_a, sign_b=sign_b, mag_b=mag_b))
        swap = wire(m, x["mag_a"] < x["mag_b"], "swap")
        big = decode_magnitude(m, fmt, Mux(swap, x["mag_b"], x["mag_a"]), "dec_big")
        small = decode_magnitude(m, fmt, Mux(swap, x["mag_a"], x["mag_b"]), "dec_small")
        x = pipeline.boundary("decoded", {
            "sign": Mux(swap, x["sign_b"], x["sign_a"]), "subtract": x["sign_a"] ^ x["sign_b"],
            "scale": big["scale"], "distance": (big["scale"] - small["scale"]).as_unsigned(),
            "sig_big": Cat(big["frac"], 1), "sig_small": Cat(small["frac"], ~small["zero"]),
            "zero": big["zero"], "nar": big["nar"] | small["nar"]})
        return self.add_aligned(m, pipeline, fmt, x)

    @staticmethod
    def add_aligned(m, pipeline, fmt, x):
        """Round sig_big * 2**scale ± sig_small * 2**(scale - distance) (equal-width sigs, the first
        one larger in magnitude) through the boundaries aligned, sum and rounding."""
        width = len(x["sig_big"])
        # Guard, round and a jammed sticky bit below both significands, a carry bit above.
        small, lost = shift_right_sticky(m, Cat(Const(0, 3), x["sig_small"]), x["distance"])
        x = pipeline.boundary("aligned", {
            **{key: x[key] for key in ("sign", "subtract", "scale", "zero", "nar")},
            "big": Cat(Const(0, 3), x["sig_big"]), "small": Cat(small[0] | lost, small[1:])})
        total = wire(m, Mux(x["subtract"], x["big"] - x["small"], x["big"] + x["small"])[:width + 4], "total")
        shifted, count = normalize(m, total)
        x = pipeline.boundary("sum", {
            "sign": x["sign"], "scale": x["scale"] + 1 - count, "frac": shifted[:width + 3],
            "zero": x["zero"] | ~total.any(), "nar": x["nar"]})
        return _round(m, pipeline, fmt, x)


class PositFMA(_PositPE):
    """o = a × b + c on posit codes with one RNE rounding of the exact result (= PositFormat.fma).

    Payload {a, b, c}; latency `stages` in 1..6 cycles. The exact product (2f + 2 bits) and c
    are aligned like the adder's operands, the larger magnitude first.
    """

    OPERANDS = ("a", "b", "c")
    BOUNDARIES = ("sum", "product", "rounding", "aligned", "decoded")

    def datapath(self, m, pipeline, payload):
        fmt, f = self.format, self.format.frac_bits
        a, b, c = (decode(m, fmt, payload[r], f"dec_{r}") for r in "abc")
        x = pipeline.boundary("decoded", {
            "sign_p": a["sign"] ^ b["sign"], "scale_p": a["scale"] + b["scale"],
            "sig_a": Cat(a["frac"], 1), "sig_b": Cat(b["frac"], 1),
            "zero_p": a["zero"] | b["zero"], "nar": a["nar"] | b["nar"] | c["nar"],
            "sign_c": c["sign"], "scale_c": c["scale"], "sig_c": Cat(Const(0, f + 1), c["frac"], ~c["zero"])})
        # The product as 1.xx (2f + 2 bits with the point after the top bit) and c on the same grid.
        product = wire(m, x["sig_a"] * x["sig_b"], "product")
        carry = product[2 * f + 1]
        sig_p = Mux(carry, product, Cat(Const(0, 1), product[:2 * f + 1]))
        sig_p = wire(m, Mux(x["zero_p"], 0, sig_p), "sig_p")
        scale_p = wire(m, x["scale_p"] + carry, "scale_p")
        # The product goes first when c is zero, or when it is nonzero with a larger (scale, sig).
        c_zero = ~x["sig_c"][-1]
        p_larger = wire(m, c_zero | (~x["zero_p"] & ((scale_p > x["scale_c"]) |
                                                     ((scale_p == x["scale_c"]) & (sig_p >= x["sig_c"])))),
                        "p_larger")
        big_scale = Mux(p_larger, scale_p, x["scale_c"])
        small_scale = Mux(p_larger, x["scale_c"], scale_p)
        x = pipeline.boundary("product", {
            "sign": Mux(p_larger, x["sign_p"], x["sign_c"]), "subtract": x["sign_p"] ^ x["sign_c"],
            "scale": big_scale, "distance": (big_scale - small_scale).as_unsigned(),
            "sig_big": Mux(p_larger, sig_p, x["sig_c"]), "sig_small": Mux(p_larger, x["sig_c"], sig_p),
            "zero": x["zero_p"] & c_zero, "nar": x["nar"]})
        return PositAdder.add_aligned(m, pipeline, fmt, x)


def _round(m, pipeline, fmt, x):
    """Boundary `rounding`, then the code of x = dict(sign, scale, frac, zero, nar)."""
    x = pipeline.boundary("rounding", x)
    return round_to_posit(m, fmt, x["sign"], x["scale"], x["frac"], zero=x["zero"], nar=x["nar"])


class PositQuireMAC(_PositPE):
    """Exact posit dot products: q <- q + a × b in a quire of fmt.quire_width(carry_bits) bits; every
    input yields the quire (including its product) rounded once, RNE, and `last` ends the sum.

    Input payload {a, b, last}; output: one posit code per input, `stages` cycles later (1..5).
    After an input with last = 1 the next product starts a new sum. As in the reference (Quire,
    PositFormat.quire_dot) the sum is NaR from a NaR operand, or from a partial sum outside
    ±(2**(width-1) - 1), until it ends. The quire register is itself a pipeline stage: the
    rounding reads it, so accumulation never waits for rounding.
    """

    BOUNDARIES = ("placed", "normalized", "decoded", "rounding")
    EXTRA_FIELDS = {"last": 1}

    def __init__(self, fmt, *, stages=1, carry_bits=30):
        super().__init__(fmt, stages=stages)
        self.quire_bits = self.format.quire_width(carry_bits)      # SpecError unless an int >= 0
        self.carry_bits = carry_bits

    def elaborate(self, platform):
        m = Module()
        fmt, width = self.format, self.quire_bits
        f, fraction_bits = fmt.frac_bits, fmt.quire_frac_bits
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipeline = _Pipeline(m, advance, self.i.valid, self.cuts)

        a, b = (decode(m, fmt, self.i.payload[r], f"dec_{r}") for r in "ab")
        x = pipeline.boundary("decoded", {
            "sign": a["sign"] ^ b["sign"], "scale": a["scale"] + b["scale"],
            "sig_a": Cat(a["frac"], ~a["zero"]), "sig_b": Cat(b["frac"], ~b["zero"]),
            "nar": a["nar"] | b["nar"], "last": self.i.payload.last})
        # The product's LSB weighs 2**(scale - 2f); the quire's 2**-fraction_bits. Every product of
        # nonzero posits has scale + fraction_bits in 0..2 * fraction_bits; the bits shifted below
        # the quire's LSB are zero (products are multiples of minpos**2).
        product = wire(m, x["sig_a"] * x["sig_b"], "product")
        offset = (x["scale"] + fraction_bits).as_unsigned()[:max(1, (2 * fraction_bits).bit_length())]
        term = (product << offset)[2 * f:2 * f + width]
        x = pipeline.boundary("placed", {"sign": x["sign"], "term": term, "nar": x["nar"], "last": x["last"]})

        quire = Signal(width)
        nar = Signal()
        restart = Signal()
        base = Mux(restart, 0, quire).as_signed()
        total = wire(m, base + Mux(x["sign"], -x["term"], x["term"]), "total")
        limit = (1 << (width - 1)) - 1
        overflow = (total > limit) | (total < -limit)
        filled = Signal()
        with m.If(advance):
            m.d.sync += filled.eq(pipeline.valid)
            with m.If(pipeline.valid):
                m.d.sync += [quire.eq(total[:width]), nar.eq((nar & ~restart) | x["nar"] | overflow),
                             restart.eq(x["last"])]
        pipeline.valid = filled

        sign = quire[width - 1]
        magnitude = wire(m, Mux(sign, -quire, quire)[:width], "magnitude")
        shifted, count = normalize(m, magnitude)
        y = pipeline.boundary("normalized", {
            "sign": sign, "scale": (width - 1 - fraction_bits) - count, "frac": shifted[:width - 1],
            "zero": ~magnitude.any(), "nar": nar})
        code = _round(m, pipeline, fmt, y)
        m.d.comb += [self.o.valid.eq(pipeline.valid), self.o.payload.eq(code)]
        return m
