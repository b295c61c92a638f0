"""Posit(n, es) processing elements: multiplier, adder, fused multiply-add and an exact quire MAC.

Each is a valid/ready stream Component taking raw codes and returning raw codes, bit-exact with
forma.sim.formats.posit (one RNE rounding); `stages` sets the latency, a stalled output holds all.
"""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats.posit import QUIRE_CARRY_BITS
from .posit_units import (decode, decode_signed, normalize, normalize_signed, posit_code, posit_format,
                          round_body, shift_right_sticky, wire)


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

    Payload {a, b} (a in the low bits); latency `stages` in 1..5 cycles. Both codes decode to
    two's complement significands (decode_signed), whose signed product rounds without negation.
    """

    BOUNDARIES = ("product", "decoded", "rounding", "rounded")

    def datapath(self, m, pipeline, payload):
        fmt, f = self.format, self.format.frac_bits
        a, b = (decode_signed(m, fmt, payload[r], f"dec_{r}") for r in "ab")
        x = pipeline.boundary("decoded", {
            "sign": a["sign"] ^ b["sign"], "scale": a["scale"] + b["scale"], "sig_a": a["sig"], "sig_b": b["sig"],
            "zero": a["zero"] | b["zero"], "nar": a["nar"] | b["nar"]})
        # sig_a, sig_b in [1, 2) or [-2, -1): the product is in [1, 4) (4 only for (-2)²) or (-4, -1),
        # 2f fraction bits; it moves one place right when outside [1, 2) and [-2, -1).
        product = wire(m, x["sig_a"] * x["sig_b"], "product")
        carry = product[2 * f + 1] ^ x["sign"]
        four = product[2 * f + 2] & ~x["sign"]
        x = pipeline.boundary("product", {
            "sign": x["sign"], "scale": x["scale"] + Cat(carry, four), "zero": x["zero"], "nar": x["nar"],
            "frac": Mux(carry, product[:2 * f + 1], Cat(Const(0, 1), product[:2 * f]))})
        return _round(m, pipeline, fmt, x, signed=True, one_shift=True)   # one_shift: 14 fewer LUTs here


class PositAdder(_PositPE):
    """o = a + b on posit codes, one RNE rounding (= PositFormat.add); NaR if either is NaR.

    Payload {a, b}; latency `stages` in 1..6 cycles. Both codes decode to two's complement
    significands (decode_signed); the one of the smaller scale is aligned with three extra bits and
    a jammed sticky, the signed sum normalized and rounded without negating anything.
    """

    BOUNDARIES = ("sum", "decoded", "rounding", "aligned", "rounded")

    def datapath(self, m, pipeline, payload):
        fmt = self.format
        a, b = (decode_signed(m, fmt, payload[r], f"dec_{r}") for r in "ab")
        swap = wire(m, a["scale"] < b["scale"], "swap")
        x = pipeline.boundary("decoded", {
            "scale": Mux(swap, b["scale"], a["scale"]),
            "distance": Mux(swap, b["scale"] - a["scale"], a["scale"] - b["scale"]).as_unsigned(),
            "sig_big": Mux(swap, b["sig"], a["sig"]), "small": Cat(Const(0, 3), Mux(swap, a["sig"], b["sig"])),
            "nar": a["nar"] | b["nar"]})
        return add_signed(m, pipeline, fmt, x)


def add_signed(m, pipeline, fmt, x):
    """Round sig_big * 2**scale + small * 2**(scale - distance - 3) through the boundaries aligned,
    sum, rounding and rounded: sig_big a two's complement significand, small one with three more
    bits below (guard, round, sticky), 0 for zero, no larger than 2**(len(sig_big) + 2)."""
    width = len(x["sig_big"])
    # The shift copies the sign in, the bits it drops jam into the sticky bit.
    small, lost = shift_right_sticky(m, x["small"], x["distance"], fill=x["small"][-1])
    x = pipeline.boundary("aligned", {
        "scale": x["scale"], "nar": x["nar"],
        "big": Cat(Const(0, 3), x["sig_big"]).as_signed(), "small": Cat(small[0] | lost, small[1:]).as_signed()})
    total = wire(m, x["big"] + x["small"], "total")                        # width + 4 bits, in [-4, 4)
    shifted, count = normalize_signed(m, total)
    x = pipeline.boundary("sum", {
        "sign": shifted[-1], "scale": x["scale"] + 1 - count, "frac": shifted[:width + 2],
        "zero": ~total.any(), "nar": x["nar"]})
    return _round(m, pipeline, fmt, x, signed=True)


class PositFMA(_PositPE):
    """o = a × b + c on posit codes with one RNE rounding of the exact result (= PositFormat.fma).

    Payload {a, b, c}; latency `stages` in 1..6 cycles. The exact product (a two's complement
    significand of 2f + 3 bits) and c are aligned like the adder's operands, the larger scale first.
    """

    OPERANDS = ("a", "b", "c")
    BOUNDARIES = ("sum", "product", "rounding", "aligned", "decoded")

    def datapath(self, m, pipeline, payload):
        fmt, f = self.format, self.format.frac_bits
        a, b, c = (decode_signed(m, fmt, payload[r], f"dec_{r}") for r in "abc")
        x = pipeline.boundary("decoded", {
            "sign_p": a["sign"] ^ b["sign"], "scale_p": a["scale"] + b["scale"], "sig_a": a["sig"], "sig_b": b["sig"],
            "zero_p": a["zero"] | b["zero"], "nar": a["nar"] | b["nar"] | c["nar"],
            "zero_c": c["zero"], "scale_c": c["scale"], "sig_c": Cat(Const(0, f + 1), c["sig"]).as_signed()})
        # The product as a two's complement 2f + 3 bit significand like c's: 01.xx or 10.xx (as in
        # PositMultiplier), 0 when a or b is zero.
        product = wire(m, x["sig_a"] * x["sig_b"], "product")
        carry = product[2 * f + 1] ^ x["sign_p"]
        four = product[2 * f + 2] & ~x["sign_p"]
        low = Mux(carry, product[:2 * f + 1], Cat(Const(0, 1), product[:2 * f]))
        hidden = Mux(carry, product[2 * f + 1], product[2 * f]) | four
        sig_p = wire(m, Mux(x["zero_p"], 0, Cat(low, hidden, x["sign_p"])).as_signed(), "sig_p")
        scale_p = wire(m, x["scale_p"] + Cat(carry, four), "scale_p")
        # The larger scale goes first; a zero operand (its scale is meaningless) goes second.
        p_first = wire(m, x["zero_c"] | (~x["zero_p"] & (scale_p >= x["scale_c"])), "p_first")
        big_scale = Mux(p_first, scale_p, x["scale_c"])
        small_scale = Mux(p_first, x["scale_c"], scale_p)
        x = pipeline.boundary("product", {
            "scale": big_scale, "distance": (big_scale - small_scale).as_unsigned(),
            "sig_big": Mux(p_first, sig_p, x["sig_c"]), "small": Cat(Const(0, 3), Mux(p_first, x["sig_c"], sig_p)),
            "nar": x["nar"]})
        return add_signed(m, pipeline, fmt, x)


def _round(m, pipeline, fmt, x, signed=False, one_shift=False):
    """Boundaries `rounding` and `rounded`, then the code of x = dict(sign, scale, frac, zero, nar):
    a magnitude 1.frac, or if `signed` the two's complement significand of round_signed."""
    x = pipeline.boundary("rounding", x)
    polarity = x["sign"] if signed else Const(0, 1)
    body, up = round_body(m, fmt, polarity, x["scale"], x["frac"], one_shift=one_shift)
    if not signed:                                # -(body + up) = ~body + (1 - up)
        body, up = body ^ x["sign"].replicate(len(body)), up ^ x["sign"]
    x = pipeline.boundary("rounded", {"sign": x["sign"], "body": body, "up": up, "zero": x["zero"], "nar": x["nar"]})
    return posit_code(m, fmt, x["sign"], x["body"], x["up"], x["zero"], x["nar"])


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

    def __init__(self, fmt, *, stages=1, carry_bits=QUIRE_CARRY_BITS):
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
