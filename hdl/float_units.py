"""Minifloat format units: decode a code into the exact unpacked value, and encode (round to
nearest even) an unpacked value into a code, for every FloatFormat style; plus the bit helpers.

The value conventions are those of `hdl/unpacked.py`; the rounding and special-value rules are
those of `sim/formats/minifloat.py`, which these units reproduce bit for bit.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats.minifloat import FloatFormat
from .unpacked import rounding_layout, unpacked_layout


def signed_bits(lo: int, hi: int) -> int:
    """Width of the narrowest signed shape holding every integer in [lo, hi] (at least 2)."""
    return max(2, max(-lo - 1, hi, 0).bit_length() + 1)


def leading_zeros(value):
    """Number of leading zero bits of `value` (len(value) when it is 0), as a log-depth tree."""
    width = len(value)
    size = 1 << width.bit_length()          # > width: a 1 below the LSB bounds the count
    padded = Cat(Const(1 << (size - width - 1), size - width), value)

    def count(bits):
        if len(bits) == 2:
            return ~bits.any(), ~bits[1]
        half = len(bits) // 2
        lo_zero, lo_count = count(bits[:half])
        hi_zero, hi_count = count(bits[half:])
        return lo_zero & hi_zero, Mux(hi_zero, Cat(lo_count, Const(1, 1)), Cat(hi_count, Const(0, 1)))

    return count(padded)[1]


def shift_right_sticky(value, amount):
    """(value >> amount, OR of the bits shifted out) for an unsigned `amount`; amounts beyond
    len(value) shift all out. The shift is clamped on the amount's high bits (no comparator)."""
    width = len(value)
    bits = min(len(amount), width.bit_length())     # shifts by 2**bits - 1 >= width clear value
    reach = (1 << bits) - 1
    low = amount[:bits]
    if len(amount) > bits:
        low = Mux(amount[bits:].any(), reach, low)
    wide = Cat(Const(0, reach), value) >> low
    return wide[reach:], wide[:reach].any()


def register(m, enable, point, values, reset_less=()):
    """`values` (Values or Views) registered, loading while `enable` is 1, as signals named
    `point`_index (Views stay Views of the same layout); those whose index is in `reset_less`
    take no reset (data registers, `forma.hdl.pipeline`)."""
    out = []
    for index, value in enumerate(values):
        reg = Signal(value.shape(), name=f"{point}_{index}", reset_less=index in reset_less)
        with m.If(enable):
            m.d.sync += reg.eq(value)
        out.append(reg)
    return out


def round_increment(mode: str, lsb, guard, sticky, negative):
    """1 when a truncated magnitude steps up one unit under rounding `mode` (a
    base.ROUNDING_MODES name except "stochastic"): lsb is its parity bit, guard the half-unit
    bit below it, sticky the OR of everything lower, negative the sign of the value."""
    inexact = guard | sticky
    rules = {
        "rne": guard & (sticky | lsb),
        "trunc": Const(0, 1),
        "floor": negative & inexact,
        "ceil": ~negative & inexact,
        "away": inexact,
        "half_away": guard,
        "half_zero": guard & sticky,
        "half_up": guard & (sticky | ~negative),
        "half_down": guard & (sticky | negative),
    }
    if mode not in rules:
        raise SpecError(f"rounding {mode!r}: hardware rounds with one of {', '.join(rules)}")
    return rules[mode]


def check_float(fmt, role):
    if not isinstance(fmt, FloatFormat):
        raise SpecError(f"{role}={fmt.name}: expected a minifloat format (e.g. float8_e4m3fn)")
    return fmt


class UnpackedDecoder(wiring.Component):
    """Base of the decoders: `code` in, exact `value` out, sized to [exp_min, exp_max]
    exponents (exp_hi widens the exponent field for special encodings) and sig_bits."""

    def __init__(self, fmt, sig_bits, exp_min, exp_max, exp_hi=None):
        self.format, self.sig_bits = fmt, sig_bits
        self.exp_min, self.exp_max = exp_min, exp_max
        self.exp_bits = signed_bits(exp_min, exp_max if exp_hi is None else exp_hi)
        super().__init__({
            "code": In(fmt.bits),
            "value": Out(unpacked_layout(self.sig_bits, self.exp_bits)),
        })


class FloatDecoder(UnpackedDecoder):
    """Combinational: `code` (raw bits of `fmt`) -> `value`, the exact unpacked value.

    sig has man_bits + 1 bits (implicit bit included), exp is the weight of sig's LSB, in
    [exp_min, exp_max]. Zeros (incl. denormals-are-zero codes of _nosub formats) give sig = 0.
    """

    def __init__(self, fmt):
        fmt = check_float(fmt, "fmt")
        exp_max = fmt.emax - fmt.man_bits
        specials = ((1 << fmt.exp_bits) - 1) - fmt.bias - fmt.man_bits  # all-ones exponent field
        super().__init__(fmt, fmt.man_bits + 1, fmt.emin - fmt.man_bits, exp_max,
                         max(exp_max, specials))

    def elaborate(self, platform):
        m = Module()
        fmt, v, code = self.format, self.value, self.code
        e, man = fmt.exp_bits, fmt.man_bits
        ef = code[man:man + e]
        mf = code[:man]
        mag = code[:man + e]
        sign = code[man + e] if fmt.signed else Const(0, 1)
        normal = Const(1, 1) if fmt.style == "fnu" else ef.any()
        zero = ~normal & (~mf.any() if fmt.has_subnormals else 1) if fmt.has_zero else Const(0, 1)
        nan = {
            "ieee": ef.all() & mf.any(),
            "fn": mag.all(),
            "fnuz": sign & ~mag.any(),
            "finite": Const(0, 1),
            "fnu": code.all(),
        }[fmt.style]
        inf = ef.all() & ~mf.any() if fmt.has_inf else Const(0, 1)
        if fmt.style == "fnuz":
            zero = zero & ~nan
        fraction = mf if fmt.has_subnormals else Mux(normal, mf, 0)
        m.d.comb += [
            v.sign.eq(sign),
            v.sig.eq(Cat(fraction, normal)),
            v.exp.eq(Mux(normal, ef, 1) - (fmt.bias + man)),
            v.zero.eq(zero),
            v.inf.eq(inf),
            v.nan.eq(nan),
        ]
        return m


class UnpackedEncoder(wiring.Component):
    """Base of the encoders: `value` (a rounding_layout of sig_bits/exp_bits) in, `code` out.

    Combinational unless `cuts` names some of the class's CUTS: each one chosen puts a register
    stage inside the encoder (latency len(cuts) cycles), loading while the `advance` input is 1.
    """

    CUTS = ()   # internal cut points, in datapath order

    def __init__(self, fmt, sig_bits, exp_bits, cuts=()):
        if not (isinstance(sig_bits, int) and sig_bits >= 1):
            raise SpecError(f"sig_bits={sig_bits!r}: the significand width must be an integer >= 1")
        if not (isinstance(exp_bits, int) and exp_bits >= 2):
            raise SpecError(f"exp_bits={exp_bits!r}: the exponent width must be an integer >= 2")
        cuts = tuple(cuts)
        if any(cut not in self.CUTS for cut in cuts):
            allowed = ", ".join(self.CUTS) or "none (this encoder is combinational)"
            raise SpecError(f"cuts={cuts!r}: the {type(self).__name__} cut points are {allowed}")
        self.cuts, self.latency = set(cuts), len(set(cuts))
        ports = {"value": In(rounding_layout(sig_bits, exp_bits)), "code": Out(fmt.bits)}
        if self.cuts:
            ports["advance"] = In(1)
        super().__init__(ports)

    def cut(self, m, point, *values):
        """The values registered when `point` is one of the chosen cuts, else unchanged."""
        return tuple(register(m, self.advance, point, values)) if point in self.cuts else values


class FloatEncoder(UnpackedEncoder):
    """`value` (a rounding_layout of sig_bits/exp_bits) -> `code` of `fmt`.

    One round-to-nearest-even of the exact value; overflow, infinities, NaN, signed zeros,
    fnuz, fnu and _nosub follow `fmt.encode(x, saturate=saturate)`. A sig of 0 is a zero.
    A NaN cannot be encoded in a finite-only format (the reference raises): it gives code 0.
    Cut points: "normalized" (after the leading-zero shift), "rounded" (before overflow and
    special values).
    """

    CUTS = ("normalized", "rounded")

    def __init__(self, fmt, sig_bits, exp_bits, *, saturate=False, cuts=()):
        self.format = check_float(fmt, "fmt")
        self.saturate = bool(saturate)
        super().__init__(fmt, sig_bits, exp_bits, cuts)

    def elaborate(self, platform):
        m = Module()
        fmt, v = self.format, self.value
        man, emin = fmt.man_bits, fmt.emin
        width = len(v.sig)
        keep = max(width, man + 2)                     # implicit bit, mantissa, guard

        # Normalize: MSB of `norm` has weight 2**(emin + scale); scale < 0 below min_normal.
        # The exponent quantities are separate adders on `top` and `lz`, side by side.
        lz = leading_zeros(v.sig)
        norm = Signal(keep)
        m.d.comb += norm.eq(Cat(Const(0, keep - width), (v.sig << lz)[:width]))
        exp_shape = signed(max(len(v.exp), signed_bits(-emin, -emin)) + width.bit_length() + 3)
        top = Signal(exp_shape)                             # scale + lz
        scale, field = Signal(exp_shape), Signal(exp_shape)
        bias = 0 if fmt.style == "fnu" else 1               # the exponent field of scale 0
        m.d.comb += [top.eq(v.exp + (width - 1 - emin)), scale.eq(top - lz),
                     field.eq(top + bias - lz)]
        below = scale[-1]                                   # subnormal, or under min_normal
        kept, guard = norm[keep - man - 1:], norm[keep - man - 2]
        sticky = norm[:keep - man - 2].any() | v.sticky
        is_zero = v.zero | ~v.sig.any()
        exponent = Mux(below, 0, field)[:len(field) - 1]    # the result's exponent field
        if fmt.has_subnormals:
            # Places to denormalize by: -scale, clamped to man + 2 (all shifted out beyond); the
            # clamp compares lz with a bound taken from `top` alongside the leading-zero count.
            depth, bound = Signal(exp_shape), Signal(exp_shape)
            m.d.comb += [depth.eq(lz - top), bound.eq(top + (man + 2))]
            ends = Mux(below, Mux(lz > bound, man + 2, depth), 0)[:(man + 2).bit_length()]
        else:
            ends = scale == -1                              # half of min_normal or more
        sign, inf, nan = v.sign, v.inf, v.nan
        kept, guard, sticky, below, exponent, ends, is_zero, sign, inf, nan = self.cut(
            m, "normalized", kept, guard, sticky, below, exponent, ends, is_zero, sign, inf, nan)

        # Code magnitude before specials; wide enough to see a rounding carry past max_mag_code
        # (larger exponents are caught by `huge` whatever the truncated magnitude says).
        mag = Signal((fmt.max_mag_code + (2 << man)).bit_length())
        huge = exponent > fmt.emax - emin + bias
        if fmt.has_subnormals:
            # Denormalize (a normal result has ends = 0), then round.
            shifted, lost = shift_right_sticky(Cat(guard, kept), ends)
            up = round_increment("rne", shifted[1] | (man == 0), shifted[0], sticky | lost, sign)
            m.d.comb += mag.eq(Cat(shifted[1:man + 1], exponent) + up)
        else:
            up = round_increment("rne", kept[0] | (man == 0), guard, sticky, sign)
            normal_mag = Cat(kept[:man], exponent) + up
            if fmt.style == "fnu":
                m.d.comb += mag.eq(Mux(below, 0, normal_mag))
            else:
                # Below min_normal the candidates are 0 and min_normal: up when over half of it.
                over_half = kept[:man].any() | guard | sticky | (man == 0)
                m.d.comb += mag.eq(Mux(below, Mux(ends & over_half, 1 << man, 0), normal_mag))
        mag, huge, is_zero, sign, inf, nan = self.cut(m, "rounded", mag, huge, is_zero, sign, inf, nan)

        # Specials and overflow.
        max_mag = fmt.max_mag_code
        overflow = ~is_zero & (huge | (mag > max_mag))
        if fmt.has_inf and not self.saturate:
            big_mag, big_nan = fmt.inf_code, Const(0, 1)
        elif fmt.has_nan and not self.saturate:
            big_mag, big_nan = 0, Const(1, 1)
        else:
            big_mag, big_nan = max_mag, Const(0, 1)
        result_mag = Mux(inf | overflow, big_mag, Mux(is_zero, 0, mag))
        is_nan = nan | ((inf | overflow) & big_nan)
        if fmt.style == "fnu":
            is_nan = is_nan | sign | is_zero
        if not fmt.has_nan:
            is_nan = Const(0, 1)
            result_mag = Mux(nan, 0, result_mag)
        em = fmt.exp_bits + man
        sign = sign & ~nan
        if fmt.style == "fnuz":
            sign = sign & (result_mag != 0)
        packed = Cat(result_mag[:em], sign) if fmt.signed else result_mag[:em]
        m.d.comb += self.code.eq(Mux(is_nan, max(fmt.nan_code, 0), packed))
        return m
