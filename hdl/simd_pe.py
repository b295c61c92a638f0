"""Run-time switchable SIMD multiplier: a 16-bit operand word holds 4, 2 or 1 lanes of the format the
per-beat `mode` picks (e.g. FP4 x4, posit(8,0) x2, posit(16,1) x1, int8 x2, int4 x4), all lanes
sharing one significand multiplier array of four 8x8 multipliers.

Per lane, float and posit modes return `fmt.mul(a, b)` (the exact product rounded once, RNE, with
the format's overflow rule) and integer modes the exact product, so the PE is bit-exact with the
reference formats in every mode. Each lane's significand magnitude goes into the shared array
(`SplitMultiplier`); the array's lane products are rounded and encoded per lane and format.
"""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from .float_pe import Pipeline, check_stages, multiply_unpacked
from .float_units import FloatDecoder, FloatEncoder
from .posit_units import decode_magnitude, round_to_posit, wire

WORD = 16                    # bits of each operand word
LANE_BITS = (4, 8, 16)       # lane widths the array splits into
DEFAULT_MODES = ("float4_e2m1fn", "posit(8,0)", "posit(16,1)", "int8", "int4")
FAMILIES = ("float", "posit", "int")


class LaneSplit(enum.Enum, shape=2):
    """How the shared array cuts its 16-bit operands: one, two or four independent lanes."""
    WHOLE = 0      # one 16 x 16 product in bits 0..31
    HALVES = 1     # two 8 x 8 products in bits 0..15 and 16..31
    QUARTERS = 2   # four 4 x 4 products in bits 8l..8l+7

    @classmethod
    def of_lane_bits(cls, bits):
        return {16: cls.WHOLE, 8: cls.HALVES, 4: cls.QUARTERS}[bits]


class SplitMultiplier(wiring.Component):
    """Combinational: unsigned `a` x `b` (16-bit words) cut into independent lanes by `split`.

    Lane l of w = 16, 8 or 4 bits multiplies a[w*l : w*(l+1)] by b[w*l : w*(l+1)] into
    p[2w*l : 2w*(l+1)]. Four 8x8 multipliers m_ij (i: half of a, j: half of b) feed one fixed sum
    p = m00 + (m01 + m10) << 8 + m11 << 16; the split only steers their operands: WHOLE gives
    the full product; HALVES zeroes the cross multipliers m01, m10; QUARTERS gives m00, m01 one
    nibble lane each and m10, m11 a nibble lane moved up four bits, so that product lands
    eight bits higher. No lane's product can carry into the next.
    """

    def __init__(self):
        super().__init__({"a": In(WORD), "b": In(WORD), "split": In(LaneSplit),
                          "p": Out(2 * WORD)})

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        whole = self.split == LaneSplit.WHOLE
        quarters = self.split == LaneSplit.QUARTERS
        nibble = [(a[4 * k:4 * k + 4], b[4 * k:4 * k + 4]) for k in range(4)]
        zero = Const(0, 8)
        operands = {
            "m00": (Mux(quarters, nibble[0][0], a[:8]), Mux(quarters, nibble[0][1], b[:8])),
            "m01": (Mux(whole, a[:8], Mux(quarters, nibble[1][0], zero)),
                    Mux(whole, b[8:], nibble[1][1])),
            "m10": (Mux(whole, a[8:], Mux(quarters, Cat(Const(0, 4), nibble[2][0]), zero)),
                    Mux(whole, b[:8], Cat(Const(0, 4), nibble[2][1]))),
            "m11": (Mux(quarters, Cat(Const(0, 4), nibble[3][0]), a[8:]),
                    Mux(quarters, Cat(Const(0, 4), nibble[3][1]), b[8:])),
        }
        products = {}
        for name, (x, y) in operands.items():
            x, y = wire(m, x, f"{name}_a"), wire(m, y, f"{name}_b")
            products[name] = wire(m, x * y, name)
        middle = products["m01"] + products["m10"]
        m.d.comb += self.p.eq(products["m00"] + (middle << 8) + (products["m11"] << 16))
        return m


# --- lane families ---------------------------------------------------------------------------
class _Magnitudes:
    """Sign and magnitude of every lane of an operand word, made once per lane width and shared by
    the integer and posit modes of that width (a posit's magnitude code is its two's complement)."""

    def __init__(self, m, words):
        self.m, self.words, self.cache = m, words, {}

    def lanes(self, operand, bits, signed=True):
        key = (operand, bits, signed)
        if key not in self.cache:
            word = self.words[operand]
            lanes = []
            for lane in range(WORD // bits):
                code = word[bits * lane:bits * (lane + 1)]
                if signed:
                    sign = code[bits - 1]
                    magnitude = wire(self.m, Mux(sign, -code, code)[:bits], f"mag{bits}_{operand}{lane}")
                else:
                    sign, magnitude = Const(0, 1), code
                lanes.append((sign, magnitude))
            self.cache[key] = lanes
        return self.cache[key]


class _Lanes:
    """One mode: `fmt` in WORD // fmt.bits lanes.

    `operands` gives the magnitude words for the shared array and the per-lane side information
    (a dict of Values, registered with the operands); `result` turns the array's product word
    and that side information into the 32-bit result word.
    """

    def __init__(self, fmt, index):
        self.format, self.index = fmt, index
        self.bits = fmt.bits
        self.lanes = WORD // fmt.bits
        self.split = LaneSplit.of_lane_bits(fmt.bits)

    def place(self, values):
        """A magnitude word with lane l's value (at most `bits` wide) at bit bits*l."""
        return Cat(*(Cat(v, Const(0, self.bits - len(v))) for v in values))

    def product(self, word, lane, width):
        """The low `width` bits of lane `lane`'s product in the array's output word."""
        base = 2 * self.bits * lane
        return word[base:base + width]


class _IntLanes(_Lanes):
    """Integer lanes: the exact product, 2 x bits wide (two's complement for signed formats)."""

    def operands(self, m, magnitudes):
        signed = self.format.signed
        a, b = (magnitudes.lanes(r, self.bits, signed) for r in "ab")
        side = {f"sign{l}": a[l][0] ^ b[l][0] for l in range(self.lanes)}
        return self.place(x[1] for x in a), self.place(x[1] for x in b), side

    def result(self, m, side, word):
        width = 2 * self.bits
        lanes = []
        for l in range(self.lanes):
            magnitude = self.product(word, l, width)
            lanes.append(Mux(side[f"sign{l}"], -magnitude, magnitude)[:width])
        return Cat(*lanes)


class _PositLanes(_Lanes):
    """Posit lanes: the product rounded once to the lane's posit (= PositFormat.mul)."""

    def operands(self, m, magnitudes):
        fmt = self.format
        a, b = (magnitudes.lanes(r, self.bits) for r in "ab")
        side, sig_a, sig_b = {}, [], []
        for l in range(self.lanes):
            name = f"{fmt.n}_{l}"
            x = decode_magnitude(m, fmt, a[l][1], f"posit{name}_a")
            y = decode_magnitude(m, fmt, b[l][1], f"posit{name}_b")
            sig_a.append(Cat(x["frac"], 1))
            sig_b.append(Cat(y["frac"], 1))
            side.update({f"sign{l}": a[l][0] ^ b[l][0], f"scale{l}": x["scale"] + y["scale"],
                         f"zero{l}": x["zero"] | y["zero"], f"nar{l}": x["nar"] | y["nar"]})
        return self.place(sig_a), self.place(sig_b), side

    def result(self, m, side, word):
        fmt, f = self.format, self.format.frac_bits
        codes = []
        for l in range(self.lanes):
            product = wire(m, self.product(word, l, 2 * f + 2), f"posit{fmt.n}_product{l}")
            carry = product[2 * f + 1]     # the product of two 1.f significands is in [1, 4)
            frac = Mux(carry, product[:2 * f + 1], Cat(Const(0, 1), product[:2 * f]))
            codes.append(round_to_posit(m, fmt, side[f"sign{l}"], side[f"scale{l}"] + carry, frac,
                                        zero=side[f"zero{l}"], nar=side[f"nar{l}"],
                                        name=f"posit{fmt.n}_enc{l}"))
        return Cat(*codes)


class _FloatLanes(_Lanes):
    """Minifloat lanes: the product rounded once to the lane's format (= FloatFormat.mul).

    multiply_unpacked gives each lane product's sign, exponent and class; its own significand
    product is left unused (the shared array supplies it, synthesis removes the other).
    """

    def __init__(self, fmt, index):
        super().__init__(fmt, index)
        self.sig_bits = 2 * (fmt.man_bits + 1)    # of the exact significand product

    def operands(self, m, magnitudes):
        side, sig_a, sig_b = {}, [], []
        for l in range(self.lanes):
            values = []
            for r, sigs in (("a", sig_a), ("b", sig_b)):
                decoder = m.submodules[f"{self.format.name}_decode_{r}{l}"] = FloatDecoder(self.format)
                m.d.comb += decoder.code.eq(magnitudes.words[r][self.bits * l:self.bits * (l + 1)])
                values.append(decoder.value)
                sigs.append(decoder.value.sig)
            product = multiply_unpacked(m, *values)
            side.update({f"{key}{l}": getattr(product, key)
                         for key in ("sign", "exp", "zero", "inf", "nan")})
        return self.place(sig_a), self.place(sig_b), side

    def result(self, m, side, word):
        codes = []
        for l in range(self.lanes):
            exp = side[f"exp{l}"]
            encoder = FloatEncoder(self.format, self.sig_bits, len(exp))
            m.submodules[f"{self.format.name}_encode{l}"] = encoder
            value = encoder.value
            m.d.comb += [value.sig.eq(self.product(word, l, self.sig_bits)), value.exp.eq(exp),
                         value.sticky.eq(0)]
            m.d.comb += [getattr(value, key).eq(side[f"{key}{l}"])
                         for key in ("sign", "zero", "inf", "nan")]
            codes.append(encoder.code)
        return Cat(*codes)


def _cut(pipe, point, mode, values, sides):
    """(mode, values, sides) through the pipeline cut `point`; sides: one dict per mode."""
    keys = [(index, key) for index, side in enumerate(sides) for key in side]
    out = pipe.cut(point, mode, *values, *(sides[index][key] for index, key in keys))
    mode, values, rest = out[0], out[1:1 + len(values)], out[1 + len(values):]
    sides = [{} for _ in sides]
    for (index, key), value in zip(keys, rest):
        sides[index][key] = value
    return mode, values, sides


_LANE_CLASSES = {"int": _IntLanes, "posit": _PositLanes, "float": _FloatLanes}


def _mode_format(mode, index):
    """The format of mode `index`, checked: a float, posit or int format of 4, 8 or 16 bits."""
    if isinstance(mode, str):
        mode = parse_format(mode, f"modes[{index}]")
    family, bits = getattr(mode, "family", None), getattr(mode, "bits", None)
    name = getattr(mode, "name", repr(mode))
    if family not in FAMILIES or bits not in LANE_BITS:
        raise SpecError(f"modes[{index}]={name}: a SIMD lane takes a float, posit or int format "
                        f"of 4, 8 or 16 bits (e.g. float4_e2m1fn, posit(8,0), int8)")
    return mode


def simd_modes(modes):
    """The lane formats of `modes` (objects or names), checked: 1 to 16 distinct formats, each a
    float, posit or int format of 4, 8 or 16 bits."""
    if isinstance(modes, str) or not hasattr(modes, "__len__") or not 1 <= len(modes) <= 16:
        raise SpecError(f"modes={modes!r}: give a list of 1 to 16 lane formats, e.g. "
                        f"{list(DEFAULT_MODES)}")
    formats = [_mode_format(mode, index) for index, mode in enumerate(modes)]
    names = [fmt.name for fmt in formats]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise SpecError(f"modes[{index}]={name}: each format may appear once in modes")
    return tuple(formats)


def mode_bits(modes):
    """Width of the `mode` field that indexes `modes`."""
    return max(1, (len(modes) - 1).bit_length())


class SIMDMultiplier(wiring.Component):
    """Per-lane products of two 16-bit operand words in the format chosen per beat by `mode`.

    modes: formats (objects or names; default DEFAULT_MODES), each a float, posit or int format
    of 4, 8 or 16 bits, so 4, 2 or 1 lanes; `mode` is the index into this list.
    Input payload {a, b, mode} (a in the low bits); lane l of a w-bit mode is bits [w*l, w*(l+1))
    of a and b. Output payload {result, mode} (32-bit result, the beat's mode):
      float and posit modes: lane l's code of fmt.mul(a_l, b_l) in result bits [w*l, w*(l+1)),
        bits 16..31 zero;
      int modes: the exact product a_l * b_l, 2w bits (two's complement for signed formats,
        unsigned for uintN), in result bits [2w*l, 2w*(l+1));
      a mode value >= len(modes) gives result 0.
    The mode may change on every beat. stages 1..3 is the latency (registers after: output,
    shared product, decoded operands); a stalled output holds the whole pipeline.
    """

    CUTS = ("product", "decoded")

    def __init__(self, modes=DEFAULT_MODES, *, stages=1):
        self.modes = simd_modes(modes)
        self.latency = self.stages = check_stages(stages, self.CUTS)
        self.mode_bits = mode_bits(self.modes)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(
                {"a": WORD, "b": WORD, "mode": self.mode_bits}))),
            "o": Out(stream.Signature(data.StructLayout(
                {"result": 2 * WORD, "mode": self.mode_bits}))),
        })

    def lanes(self, mode):
        """Lanes of mode index `mode`."""
        return WORD // self.modes[mode].bits

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipe = Pipeline(m, advance, self.i.valid, self.CUTS[:self.stages - 1])
        payload = self.i.payload
        plans = [_LANE_CLASSES[fmt.family](fmt, index) for index, fmt in enumerate(self.modes)]

        # Decode every mode's lanes; the beat's mode picks the array's operand words.
        magnitudes = _Magnitudes(m, {"a": payload.a, "b": payload.b})
        decoded = [plan.operands(m, magnitudes) for plan in plans]
        mag_a, mag_b = Signal(WORD), Signal(WORD)
        with m.Switch(payload.mode):
            for plan, (word_a, word_b, _side) in zip(plans, decoded):
                with m.Case(plan.index):
                    m.d.comb += [mag_a.eq(word_a), mag_b.eq(word_b)]
        sides = [side for _a, _b, side in decoded]
        mode, (mag_a, mag_b), sides = _cut(pipe, "decoded", payload.mode, (mag_a, mag_b), sides)

        # The shared array, cut as the beat's mode needs.
        m.submodules.array = array = SplitMultiplier()
        with m.Switch(mode):
            for plan in plans[1:]:
                with m.Case(plan.index):
                    m.d.comb += array.split.eq(plan.split)
            with m.Default():   # mode 0, or an unused mode value (its result is 0 anyway)
                m.d.comb += array.split.eq(plans[0].split)
        m.d.comb += [array.a.eq(mag_a), array.b.eq(mag_b)]
        mode, (product,), sides = _cut(pipe, "product", mode, (array.p,), sides)
        product = wire(m, product, "lane_products")

        # Round and encode per lane; the beat's mode picks the result word.
        result = Signal(2 * WORD)
        outputs = [plan.result(m, side, product) for plan, side in zip(plans, sides)]
        with m.Switch(mode):
            for plan, value in zip(plans, outputs):
                with m.Case(plan.index):
                    m.d.comb += result.eq(value)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(pipe.valid), self.o.payload.result.eq(result),
                         self.o.payload.mode.eq(mode)]
        return m
