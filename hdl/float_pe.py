"""Minifloat processing elements: multiplier, adder, fused multiply-add and format converter, each a
valid/ready stream component that rounds once and matches the reference formats bit for bit.

Every PE is decoder(s) -> exact core -> encoder, all speaking the unpacked value of
`hdl/unpacked.py`; `stages` pipeline registers sit at the PE's cut points (output first).
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from ..sim.formats.integer import FixedFormat
from ..sim.formats.minifloat import FloatFormat
from .fixed_units import FixedDecoder, FixedEncoder
from .float_units import FloatDecoder, FloatEncoder, leading_zeros, register, shift_right_sticky
from .unpacked import rounding_layout, unpacked_layout


# --- format units by family ------------------------------------------------------------------
def decoder_for(fmt):
    """The combinational decoder component of `fmt` (ports `code` -> `value`)."""
    if isinstance(fmt, FloatFormat):
        return FloatDecoder(fmt)
    if isinstance(fmt, FixedFormat):
        return FixedDecoder(fmt)
    if fmt.family == "posit":
        return _posit_unit("posit_decoder", fmt)
    raise SpecError(f"{fmt.name}: no hardware decoder for the {fmt.family} family")


def check_encoder_options(fmt, saturate, rounding):
    """SpecError unless `fmt`'s hardware encoder builds these rounding/saturate options."""
    if isinstance(fmt, FloatFormat):
        if rounding not in (None, "rne", "RND_CONV"):
            raise SpecError(f"rounding={rounding!r}: float encoders round to nearest even (rne)")
        if saturate not in (None, True, False):
            raise SpecError(f"saturate={saturate!r}: float encoders take None, True or False")
    elif isinstance(fmt, FixedFormat):
        if fmt.modes(rounding, saturate)[0] == "stochastic":
            raise SpecError(f"rounding={rounding!r}: stochastic rounding is not built in hardware")


def encoder_cuts(fmt):
    """The cut points inside `fmt`'s encoder (registers a PE may place there), in datapath order."""
    return FloatEncoder.CUTS if isinstance(fmt, FloatFormat) else ()


def encoder_for(fmt, sig_bits, exp_bits, *, saturate=None, rounding=None, cuts=()):
    """The encoder component of `fmt` (ports `value` -> `code`): one rounding.

    Floats round to nearest even (rounding None or "rne"); saturate None/False follows the
    format's overflow rule, True clamps to +-max. Fixed point takes FixedFormat.modes options.
    Combinational unless `cuts` (a subset of encoder_cuts(fmt)) places registers inside it.
    """
    check_encoder_options(fmt, saturate, rounding)
    if cuts and not set(cuts) <= set(encoder_cuts(fmt)):
        raise SpecError(f"cuts={tuple(cuts)!r}: the {fmt.name} encoder's cut points are "
                        f"{', '.join(encoder_cuts(fmt)) or 'none'}")
    if isinstance(fmt, FloatFormat):
        return FloatEncoder(fmt, sig_bits, exp_bits, saturate=bool(saturate), cuts=cuts)
    if isinstance(fmt, FixedFormat):
        return FixedEncoder(fmt, sig_bits, exp_bits, rounding=rounding, saturate=saturate)
    if fmt.family == "posit":
        return _posit_unit("posit_encoder", fmt, sig_bits, exp_bits)
    raise SpecError(f"{fmt.name}: no hardware encoder for the {fmt.family} family")


def fold_overflow(fmt, magnitude, lsb):
    """`magnitude` (unsigned, LSB weight 2**lsb) cut to the bits `fmt`'s encoder tells apart.

    A float or posit rounds every value of at least 2**top alike (overflow, or maxpos), where
    2**top is the power of two above its largest finite value; so the bits from weight 2**top
    up are ORed into that one bit. Other formats (a fixed point may wrap) keep every bit.
    """
    if isinstance(fmt, FloatFormat):
        top = fmt.emax + 1
    elif fmt.family == "posit":
        top = fmt.max_scale + 1
    else:
        return magnitude
    bits = max(top - lsb + 1, 1)
    if bits >= len(magnitude):
        return magnitude
    return Cat(magnitude[:bits - 1], magnitude[bits - 1:].any())


def unit_ports(unit):
    """(input, output) of a format unit: `code`/`value` here, `i`/`o` for the posit units."""
    if hasattr(unit, "code") and hasattr(unit, "value"):
        return (unit.code, unit.value) if isinstance(unit, (FloatDecoder, FixedDecoder)) \
            else (unit.value, unit.code)
    return unit.i, unit.o


def _posit_unit(factory, fmt, *args):
    try:
        from . import posit_units
    except ImportError:
        posit_units = None
    make = getattr(posit_units, factory, None)
    if make is None:
        raise SpecError(f"{fmt.name}: posit units are not available yet (hdl/posit_units.py)")
    return make(fmt, *args)


def _format(fmt, role, families=None):
    fmt = parse_format(fmt, role)
    if families is not None and fmt.family not in families:
        raise SpecError(f"{role}={fmt.name}: this PE takes {' or '.join(families)} formats, "
                        f"not {fmt.family}")
    return fmt


# --- exact cores on unpacked values -----------------------------------------------------------
SMALL_PRODUCT_BITS = 4   # significands at most this wide multiply in logic when asked (luts)


def shift_add_product(a, b):
    """a * b for unsigned a, b as a sum of shifted partial products: plain logic that maps to
    LUTs, where a `*` of even two 2-bit operands takes a whole hard multiplier on ECP5."""
    total = Const(0, len(a) + len(b))
    for index, bit in enumerate(b):
        total = total + Mux(bit, a << index, 0)
    return total[:len(a) + len(b)]


def multiply_unpacked(m, x, y, *, luts=False):
    """The exact product of two unpacked values (sig widths add, exponents add). luts=True
    multiplies significands of at most SMALL_PRODUCT_BITS in logic instead of with `*` (for
    blocks with many products, e.g. 32 per MX dot product, that would each take a DSP)."""
    small = luts and max(len(x.sig), len(y.sig)) <= SMALL_PRODUCT_BITS
    out = Signal(unpacked_layout(len(x.sig) + len(y.sig), max(len(x.exp), len(y.exp)) + 1),
                 name="product")
    nan = x.nan | y.nan | (x.inf & y.zero) | (y.inf & x.zero)
    m.d.comb += [
        out.sign.eq(x.sign ^ y.sign),
        out.sig.eq(shift_add_product(x.sig, y.sig) if small else x.sig * y.sig),
        out.exp.eq(x.exp + y.exp),
        out.nan.eq(nan),
        out.inf.eq((x.inf | y.inf) & ~nan),
        out.zero.eq((x.zero | y.zero) & ~nan),
    ]
    return out


def add_unpacked(m, x, y, precision, *, normalize=True, pipe=None):
    """x + y as a rounding-ready value: exact when it fits, else with the discarded bits jammed
    into the LSB so that any later round to at most `precision` significant bits is correct.

    The larger operand keeps `guard` = max(1, precision + 3 - P) bits below its P bits, so
    after at most one bit of cancellation (alignment distance >= 2) two bits still separate
    the result's LSB from the jam bit. normalize=False is valid only when both operands share
    one float format (equal exponents of subnormal LSBs make the larger exponent the larger
    magnitude). Zeros: -0 only for (-0) + (-0); an exact cancellation gives +0.
    `pipe` (a Pipeline) may register the operands once normalized (cut point "prenormalized")
    and once aligned (cut point "aligned").
    """
    width = max(len(x.sig), len(y.sig))
    guard = max(1, precision + 3 - width)
    tops, sigs = [], []
    for name, v in (("x", x), ("y", y)):
        size = len(v.sig)
        sig = Signal(width, name=f"{name}_sig")
        top = Signal(signed(max(len(x.exp), len(y.exp)) + width.bit_length() + 1), name=f"{name}_top")
        if normalize:
            lz = leading_zeros(v.sig)
            m.d.comb += [sig.eq(Mux(v.zero, 0, Cat(Const(0, width - size), (v.sig << lz)[:size]))),
                         top.eq(v.exp + (size - 1) - lz)]
        else:
            m.d.comb += [sig.eq(Mux(v.zero, 0, Cat(Const(0, width - size), v.sig))),
                         top.eq(v.exp + (size - 1))]
        tops.append(top)
        sigs.append(sig)
    (tx, ty), (sx, sy) = tops, sigs
    # Both differences side by side; unnormalized operands of one format differ in exp only.
    gap_x, gap_y = Signal(signed(len(tx) + 1)), Signal(signed(len(tx) + 1))
    if normalize:
        m.d.comb += [gap_x.eq(tx - ty), gap_y.eq(ty - tx)]
    else:
        assert len(x.sig) == len(y.sig)
        m.d.comb += [gap_x.eq(x.exp - y.exp), gap_y.eq(y.exp - x.exp)]
    if pipe is not None and "prenormalized" in pipe.cuts:
        sx, sy, tx, ty, gap_x, gap_y, x, y = pipe.cut(
            "prenormalized", sx, sy, tx, ty, gap_x, gap_y, flags_of(m, x, "x_pre"),
            flags_of(m, y, "y_pre"))
    x_big = y.zero | (~x.zero & (gap_y[-1] | (~gap_x.any() & (sx >= sy))))
    big_top = Mux(x_big, tx, ty)
    # Shift each operand by its own gap, then pick (a zero's sig is 0: any shift keeps it 0).
    y_aligned, y_lost = shift_right_sticky(Cat(Const(0, guard), sy), gap_x.as_unsigned())
    x_aligned, x_lost = shift_right_sticky(Cat(Const(0, guard), sx), gap_y.as_unsigned())
    aligned, lost = Mux(x_big, y_aligned, x_aligned), Mux(x_big, y_lost, x_lost)
    big = Cat(Const(0, guard), Mux(x_big, sx, sy))
    if pipe is not None and "aligned" in pipe.cuts:
        small, big, big_top, x_big, x, y = pipe.cut("aligned", aligned | lost, big, big_top, x_big,
                                                    flags_of(m, x, "x_flags"), flags_of(m, y, "y_flags"))
    else:
        small = aligned | lost
    subtract = x.sign ^ y.sign
    total = Signal(width + guard + 1)
    m.d.comb += total.eq(Mux(subtract, big - small, big + small))

    out = Signal(rounding_layout(len(total), len(tx) + 1), name="sum")
    nan = x.nan | y.nan | (x.inf & y.inf & subtract)
    both_zero = x.zero & y.zero
    m.d.comb += [
        out.sig.eq(total),
        out.exp.eq(big_top - (width - 1 + guard)),
        out.sticky.eq(0),
        out.nan.eq(nan),
        out.inf.eq((x.inf | y.inf) & ~nan),
        out.zero.eq(both_zero & ~nan),
    ]
    with m.If(x.inf | y.inf):
        m.d.comb += out.sign.eq(Mux(x.inf, x.sign, y.sign))
    with m.Elif(both_zero):
        m.d.comb += out.sign.eq(x.sign & y.sign)
    with m.Elif(total.any()):
        m.d.comb += out.sign.eq(Mux(x_big, x.sign, y.sign))
    return out


def flags_of(m, value, name):
    """The sign and class flags of an unpacked value, as a View with just those fields."""
    flags = Signal(data.StructLayout(dict.fromkeys(("sign", "zero", "inf", "nan"), 1)), name=name)
    m.d.comb += [flags[field].eq(value[field]) for field in ("sign", "zero", "inf", "nan")]
    return flags


def precision_of(fmt) -> int:
    """Significant bits a result of `fmt` keeps at most (sizes the adder's guard bits)."""
    if isinstance(fmt, FloatFormat):
        return fmt.man_bits + 1
    return fmt.bits


# --- pipelining ----------------------------------------------------------------------------------
class Pipeline:
    """Registers at the chosen cut points, all loading on `advance` (a global stall).

    `valid` follows the data through every register taken; `cut(point, *values)` returns the
    values registered when `point` was chosen, else unchanged. With `reset_data` False only the
    valid registers reset (the arrays' rule, `forma.hdl.pipeline`).
    """

    def __init__(self, m, advance, valid, cuts, reset_data=True):
        self.m, self.advance, self.valid, self.cuts = m, advance, valid, set(cuts)
        self.reset_data = reset_data

    def cut(self, point, *values):
        if point not in self.cuts:
            return values
        data = () if self.reset_data else range(1, len(values) + 1)
        self.valid, *out = register(self.m, self.advance, point, (self.valid,) + values, data)
        return tuple(out)


def connect_value(m, target, source):
    """Drive a rounding_layout `target` from an unpacked or rounding `source` (sticky 0 if absent)."""
    names = data.Layout.cast(source.shape()).members
    for name in ("sign", "exp", "sig", "zero", "inf", "nan"):
        m.d.comb += getattr(target, name).eq(getattr(source, name))
    m.d.comb += target.sticky.eq(source.sticky if "sticky" in names else 0)


def check_stages(stages, cuts):
    if not (isinstance(stages, int) and 1 <= stages <= len(cuts) + 1):
        raise SpecError(f"stages={stages!r}: latency in cycles must be an integer in "
                        f"[1, {len(cuts) + 1}] (registers after: output, {', '.join(cuts)})")
    return stages


class FormatPE(wiring.Component):
    """Shared shape of the PEs: decode each payload field, run `core`, encode, register out.

    Payload fields are raw codes (`a`, `b`[, `c`]); the output payload is the raw code of
    `out_format`, `latency` = `stages` cycles after acceptance. A stalled output (valid and not
    ready) holds the whole pipeline.
    """

    CUTS = ()   # cut points after the output register, in the order `stages` takes them

    def __init__(self, operands, out_format, stages, *, saturate=None, rounding=None):
        self.operands = operands
        self.out_format = out_format
        self.latency = self.stages = check_stages(stages, self.CUTS)
        self.saturate, self.rounding = saturate, rounding
        formats = list(operands.values())
        self.a_format = formats[0]
        self.b_format = formats[1] if len(formats) > 1 else None
        self.c_format = formats[2] if len(formats) > 2 else None
        payload = data.StructLayout({role: fmt.bits for role, fmt in operands.items()})
        check_encoder_options(out_format, saturate, rounding)
        super().__init__({
            "i": In(stream.Signature(payload)),
            "o": Out(stream.Signature(out_format.bits)),
        })

    def core(self, m, pipe, values):
        """The exact (or jammed) result of the decoded operand values."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipe = Pipeline(m, advance, self.i.valid, self.CUTS[:self.stages - 1])
        values = []
        for role, fmt in self.operands.items():
            unit = m.submodules[f"decode_{role}"] = decoder_for(fmt)
            code, value = unit_ports(unit)
            m.d.comb += code.eq(self.i.payload[role])
            values.append(value)
        values = pipe.cut("decoded", *values)
        result = self.core(m, pipe, values)
        if self.CUTS[0] != "decoded":
            (result,) = pipe.cut(self.CUTS[0], result)
        inner = [point for point in encoder_cuts(self.out_format) if point in pipe.cuts]
        encoder = m.submodules.encode = encoder_for(self.out_format, len(result.sig), len(result.exp),
                                                    saturate=self.saturate, rounding=self.rounding,
                                                    cuts=inner)
        value, code = unit_ports(encoder)
        connect_value(m, value, result)
        if inner:
            m.d.comb += encoder.advance.eq(advance)
        for point in inner:              # the encoder registers the data; valid keeps pace
            pipe.cut(point)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(pipe.valid), self.o.payload.eq(code)]
        return m


def _float_operands(roles, fmts):
    fmts = [_format(f, role, ("float",)) for role, f in zip(roles, fmts)]
    return dict(zip(roles, fmts))


class BinaryFloatPE(FormatPE):
    """A PE of two float operands: a_fmt, b_fmt (default a_fmt), out_fmt (default a_fmt)."""

    def __init__(self, a_fmt, b_fmt=None, out_fmt=None, *, stages=1):
        a = _format(a_fmt, "a_fmt", ("float",))
        ops = _float_operands(("a", "b"), (a, a if b_fmt is None else b_fmt))
        super().__init__(ops, _format(a if out_fmt is None else out_fmt, "out_fmt", ("float",)), stages)


class FloatMultiplier(BinaryFloatPE):
    """out = out_fmt.encode(exact a * b): one round to nearest even, non-saturating.

    a_fmt, b_fmt (default a_fmt), out_fmt (default a_fmt): minifloat formats or their names.
    Payload {a, b}; stages 1..5 (registers after: output, exact product, decoded operands,
    normalized product, rounded magnitude).
    """

    CUTS = ("product", "decoded", "normalized", "rounded")

    def core(self, m, pipe, values):
        return multiply_unpacked(m, *values)


class FloatAdder(BinaryFloatPE):
    """out = out_fmt.encode(exact a + b): one round to nearest even, non-saturating.

    Payload {a, b}; stages 1..7 (registers after: output, exact sum, decoded operands,
    normalized sum, aligned operands, rounded magnitude, normalized operands).
    """

    CUTS = ("sum", "decoded", "normalized", "aligned", "rounded", "prenormalized")

    def core(self, m, pipe, values):
        x, y = values
        return add_unpacked(m, x, y, precision_of(self.out_format),
                            normalize=self.a_format != self.b_format, pipe=pipe)


class FloatFMA(FormatPE):
    """out = out_fmt.encode(exact a * b + c): a single round to nearest even.

    b_fmt, c_fmt, out_fmt default to a_fmt. Payload {a, b, c}; stages 1..8 (registers after:
    output, exact sum, exact product, decoded operands, normalized sum, aligned operands,
    rounded magnitude, normalized addends).
    """

    CUTS = ("sum", "product", "decoded", "normalized", "aligned", "rounded", "prenormalized")

    def __init__(self, a_fmt, b_fmt=None, c_fmt=None, out_fmt=None, *, stages=1):
        a = _format(a_fmt, "a_fmt", ("float",))
        ops = _float_operands(("a", "b", "c"), (a, a if b_fmt is None else b_fmt,
                                                a if c_fmt is None else c_fmt))
        super().__init__(ops, _format(a if out_fmt is None else out_fmt, "out_fmt", ("float",)), stages)

    def core(self, m, pipe, values):
        x, y, z = values
        product, z = pipe.cut("product", multiply_unpacked(m, x, y), z)
        return add_unpacked(m, product, z, precision_of(self.out_format), normalize=True, pipe=pipe)


class Converter(FormatPE):
    """dst code = the reference's `convert(a, src, dst, rounding, saturate)`: one rounding.

    src/dst: float, integer or fixed-point formats (posits once hdl/posit_units.py exists).
    saturate/rounding None mean dst's defaults (floats: rne, non-saturating; fixed point: its
    Q and O). Payload {a}; stages 1..2 (registers after: output, decoded value), 1..4 into a
    float dst (then also: normalized value, rounded magnitude).
    """

    CUTS = ("decoded",)

    def __init__(self, src_fmt, dst_fmt, *, stages=1, saturate=None, rounding=None):
        src = _format(src_fmt, "src_fmt", ("float", "int", "fixed", "posit"))
        dst = _format(dst_fmt, "dst_fmt", ("float", "int", "fixed", "posit"))
        self.CUTS = type(self).CUTS + encoder_cuts(dst)
        super().__init__({"a": src}, dst, stages, saturate=saturate, rounding=rounding)

    def core(self, m, pipe, values):
        return values[0]
