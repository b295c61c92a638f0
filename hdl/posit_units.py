"""Posit(n, es) format units: decode a code into sign/scale/fraction, round an exact value to a code.

Combinational building blocks for the posit PEs, plus the decoder/encoder Components that speak the
common unpacked layout (hdl/unpacked.py), so any-to-any conversion is encoder(dst) after decoder(src).
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from .unpacked import rounding_layout, unpacked_layout


def posit_format(fmt, role="fmt"):
    """The PositFormat named by `fmt` (a PositFormat or its text); SpecError for other families."""
    if isinstance(fmt, str):
        fmt = parse_format(fmt)
    if getattr(fmt, "family", None) != "posit":
        name = getattr(fmt, "name", repr(fmt))
        raise SpecError(f"{role}={name}: posit units take a posit(n,es) format, 2 <= n <= 32, 0 <= es <= 4")
    return fmt


def signed_bits(lo, hi):
    """Width of the narrowest signed shape holding every integer in [lo, hi]."""
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def scale_bits(fmt):
    """Width of a signed scale (power of two of the hidden bit) of any nonzero posit of fmt."""
    return signed_bits(-fmt.max_scale, fmt.max_scale)


# ----- shifters ----------------------------------------------------------------------------------

def wire(m, value, name):
    """A combinational Signal driven by `value` (keeps shared expressions shared in the netlist)."""
    signal = Signal(value.shape(), name=name)
    m.d.comb += signal.eq(value)
    return signal


def normalize(m, value, fill=0, count_bits=None, name="norm"):
    """(shifted, count): `value` shifted left past its leading zeros, `fill` shifted in below.

    count = number of leading zeros, exact whenever value != 0 and count fits count_bits
    (default: enough for len(value)); an all-zero value gives count = 2**count_bits - 1.
    Binary-search normalizer: stage j shifts by 2**j when the top 2**j bits are all zero.
    """
    width = len(value)
    count_bits = width.bit_length() if count_bits is None else count_bits
    fill = Const(fill, 1) if isinstance(fill, int) else fill
    count = []
    for j in reversed(range(count_bits)):
        step = 1 << j
        if step < width:
            empty = ~value[width - step:].any()
            shifted = Cat(fill.replicate(step), value[:width - step])
        else:
            empty = ~value.any()
            shifted = fill.replicate(width)
        empty = wire(m, empty, f"{name}_zero{j}")
        value = wire(m, Mux(empty, shifted, value), f"{name}_{j}")
        count.append(empty)
    return value, Cat(*reversed(count))


def shift_right_sticky(m, value, amount, fill=0, name="align"):
    """(shifted, lost): value >> amount with `fill` shifted in at the top, lost = OR of every bit
    shifted out at the bottom (amounts >= len(value) shift everything out)."""
    width = len(value)
    fill = Const(fill, 1) if isinstance(fill, int) else fill
    lost = Const(0, 1)
    bits = min(len(amount), (width - 1).bit_length())
    if len(amount) > bits:                       # amounts >= 2**bits (>= width) shift everything out
        amount = Cat(amount[:bits], amount[bits:].any())
    for j in range(len(amount)):
        step = 1 << j
        if step < width:
            dropped = value[:step].any()
            shifted = Cat(value[step:], fill.replicate(step))
        else:
            dropped = value.any()
            shifted = fill.replicate(width)
        lost = wire(m, lost | (amount[j] & dropped), f"{name}_lost{j}")
        value = wire(m, Mux(amount[j], shifted, value), f"{name}_{j}")
    return value, lost


# ----- decoding -----------------------------------------------------------------------------------

def posit_magnitude(m, code, n, name="mag"):
    """(sign, magnitude code): |x| as an n-bit posit code (NaR stays 1 followed by zeros)."""
    sign = code[n - 1]
    return sign, wire(m, Mux(sign, -code, code)[:n], name)


def leading_zeros(value):
    """(count, empty): leading zeros of `value` (a power-of-two width), by a tree of halves;
    count is meaningless when empty (value == 0)."""
    width = len(value)
    if width == 1:
        return Const(0, 0), ~value[0]
    high, high_empty = leading_zeros(value[width // 2:])
    low, low_empty = leading_zeros(value[:width // 2])
    return Cat(Mux(high_empty, low, high), high_empty), high_empty & low_empty


def _fields(m, fmt, code, polarity, name):
    """Regime, exponent and fraction of an n-bit code read with `polarity` (see decode_signed).

    The regime run is counted as leading zeros of the body XOR its first bit, padded with that
    first bit so the all-ones body stops at n - 2; the bits after it come from one left shift of the
    body by that count, bits read past the end of the code as zeros, as the reference reads them.
    Returns (scale, frac): scale is signed (scale_bits), frac raw.
    """
    n, es, f = fmt.n, fmt.es, fmt.frac_bits
    first = wire(m, code[n - 2], f"{name}_first")
    run = code[:n - 2] ^ first.replicate(n - 2)  # zeros while the regime run continues
    pad_to = 1 << (n - 2).bit_length()           # > n - 2: at least one pad bit
    count, _ = leading_zeros(Cat(first.replicate(pad_to - (n - 2)), run))
    count = wire(m, count, f"{name}_count")      # regime run length - 1
    # The terminating bit lands on bit n - 1, the n - 3 bits after it below.
    shifted = wire(m, (Cat(Const(0, 2), code[:n - 2]) << count)[:n - 1], f"{name}_shifted")
    # k = count for a run of ones, -(count + 1) = ~count for zeros
    k = (Cat(count, Const(0, 1)) ^ (~(first ^ polarity)).replicate(len(count) + 1)).as_signed()
    rest = Cat(Const(0, max(es + f - (n - 3), 0)), shifted[2:])                # es + f bits
    exponent = rest[f:f + es] ^ polarity.replicate(es)
    scale = wire(m, Cat(exponent, k).as_signed(), f"{name}_scale")
    return scale, wire(m, rest[:f], f"{name}_frac")


def decode_magnitude(m, fmt, mag, name="dec"):
    """Fields of a magnitude code: dict(scale, frac, zero, nar).

    A nonzero, non-NaR magnitude is 2**scale * (1 + frac / 2**frac_bits): scale is signed (scale_bits),
    frac has fmt.frac_bits bits.
    """
    n = fmt.n
    zero = ~mag.any()
    nar = mag[n - 1]
    if n == 2:                                   # the only finite nonzero magnitude is 1.0
        return dict(scale=Const(0, signed(2)), frac=Const(0, 0), zero=zero, nar=nar)
    scale, frac = _fields(m, fmt, mag, Const(0, 1), name)
    return dict(scale=scale, frac=frac, zero=wire(m, zero, f"{name}_zero"), nar=nar)


def decode(m, fmt, code, name="dec"):
    """dict(sign, scale, frac, zero, nar) of an n-bit posit code; see decode_magnitude."""
    sign, mag = posit_magnitude(m, code, fmt.n, f"{name}_mag")
    return dict(sign=sign, **decode_magnitude(m, fmt, mag, name))


def decode_signed(m, fmt, code, name="dec"):
    """dict(sign, scale, sig, zero, nar) of an n-bit posit code, without negating it.

    A nonzero, non-NaR code is sig * 2**(scale - frac_bits) with sig a signed frac_bits + 2 bit
    significand whose two top bits differ: 01.frac (in [1, 2)) or 10.frac (in [-2, -1)); sig is 0
    for zero. A negative code reads as its one's complement with ones past its end, so regime and
    exponent come out XORed with the sign while the fraction bits stay as they are in the code.
    """
    n = fmt.n
    sign = code[n - 1]
    empty = wire(m, ~code[:n - 1].any(), f"{name}_empty")
    zero, nar = wire(m, empty & ~sign, f"{name}_zero"), empty & sign
    if n == 2:                                   # 1 = 01 * 2**0, -1 = 10 * 2**-1
        scale, frac = Cat(sign, sign).as_signed(), Const(0, 0)
    else:
        scale, frac = _fields(m, fmt, code, sign, name)
    return dict(sign=sign, scale=scale, sig=Cat(frac, ~sign & ~zero, sign).as_signed(), zero=zero, nar=nar)


def normalize_signed(m, value, name="norm"):
    """(shifted, count): two's complement `value` (>= 2 bits) shifted left until its two top bits
    differ, zeros shifted in.

    count = leading copies of the sign bit minus one (len(value) - 1 for 0 and -1).
    Stage j shifts by 2**j when the top 2**j + 1 bits are all equal.
    """
    value = value.as_unsigned()
    width = len(value)
    count_bits = (width - 1).bit_length()
    count = []
    for j in reversed(range(count_bits)):
        step = 1 << j
        if step < width - 1:
            top = value[width - step - 1:]
            same = ~(top[:-1] ^ top[1:]).any()
            shifted = Cat(Const(0, step), value[:width - step])
        else:
            same = ~(value[:-1] ^ value[1:]).any()
            shifted = Cat(Const(0, width - 1), value[-1])
        same = wire(m, same, f"{name}_same{j}")
        value = wire(m, Mux(same, shifted, value), f"{name}_{j}")
        count.append(same)
    return value, Cat(*reversed(count))


# ----- rounding -----------------------------------------------------------------------------------

def at_least(value, constant):
    """value >= constant (unsigned value, integer constant) as plain logic, not a carry chain."""
    if constant >= 1 << len(value):
        return Const(0, 1)
    result = Const(1, 1)                          # value[:index] >= constant's low bits
    for index, bit in enumerate(value):
        result = bit & result if (constant >> index) & 1 else bit | result
    return result


def _sign_extend(value, width):
    value = value.as_signed()
    if len(value) >= width:
        return value
    return Cat(value, value[-1].replicate(width - len(value))).as_signed()


def round_body(m, fmt, polarity, scale, frac, sticky=0, one_shift=False, name="enc"):
    """(body, up): the n - 1 bit body of the posit string of 2**scale * (polarity ? -2 : 1) + frac
    (+ tiny if sticky) truncated, and whether RNE rounds it up; out-of-range scales give the
    clamped body (±maxpos, ±minpos) with up = 0.

    polarity 0: frac is the fraction of 1.frac; polarity 1: the string is the two's complement
    one of the negative value, its regime and exponent bits inverted and the fraction kept.
    one_shift: one shift operator and a masked sticky instead of a stage-by-stage sticky shifter
    (same function; which maps to fewer ECP5 LUTs depends on the surrounding logic).
    """
    n, es, f = fmt.n, fmt.es, fmt.frac_bits
    sticky = Const(sticky, 1) if isinstance(sticky, int) else sticky
    keep = f + 1                                  # fraction bits that can survive, plus a guard bit
    if len(frac) > keep:
        sticky = frac[:len(frac) - keep].any() | sticky
        frac = frac[len(frac) - keep:]
    else:
        frac = Cat(Const(0, keep - len(frac)), frac)
    scale = _sign_extend(scale, es + 2)
    k = scale[es:].as_signed()
    k_negative = wire(m, k[-1], f"{name}_k_negative")
    # Regime seed "10" (k >= 0) or "01" (k < 0), shifted right by k or -k-1 with copies of its top.
    seed = k_negative ^ polarity
    string = Cat(frac, scale[:es] ^ polarity.replicate(es), seed, ~seed)
    length = len(string)                          # max(n, es + 3)
    # Out of range (k >= n - 2: maxpos, k < 2 - n: minpos) the run saturates at n - 2: the body is
    # then all copies of the seed's top bit (+-maxpos or -minpos of that polarity), or all copies
    # of the other bit followed by a guard 1, which `tiny` turns into +minpos or -maxpos.
    run_bits = (n - 2).bit_length()
    run = k.as_unsigned() ^ k_negative.replicate(len(k))    # k or -k - 1
    out = wire(m, at_least(run, n - 2), f"{name}_out")
    run = wire(m, Mux(out, n - 2, run[:run_bits]), f"{name}_run") if run_bits else Const(0, 0)
    tiny = wire(m, out & seed, f"{name}_tiny")
    if one_shift:
        # One arithmetic shift; sticky = OR of the string bits below position length - n + run.
        shifted = wire(m, (string.as_signed() >> run).as_unsigned(), f"{name}_shifted")
        below = Cat(Const(1, 1).replicate(length - n),
                    Cat(run > index for index in range(n)))
        sticky = wire(m, (string & below).any(), f"{name}_lost") | sticky
    else:
        shifted, lost = shift_right_sticky(m, string, run, fill=~seed, name=f"{name}_regime")
        sticky = shifted[:length - n].any() | lost | sticky
    body = shifted[length - (n - 1):]
    guard = shifted[length - n]
    up = wire(m, guard & (sticky | body[0]) & ~tiny, f"{name}_up")
    body = Cat(body[0] | tiny, body[1:])
    return body, up


def posit_code(m, fmt, sign, body, up, zero=0, nar=0, name="enc"):
    """Cat(body + up, sign), or 0 for zero, or NaR (which wins): the kill acts before the adder."""
    zero, nar = (Const(v, 1) if isinstance(v, int) else v for v in (zero, nar))
    kill = wire(m, zero | nar, f"{name}_kill")
    low = (body & (~kill).replicate(len(body))) + (up & ~kill)
    return Cat(low[:fmt.n - 1], Mux(nar, 1, sign & ~zero))


def round_to_posit(m, fmt, sign, scale, frac, sticky=0, zero=0, nar=0, name="enc"):
    """The n-bit posit code of (-1)**sign * 2**scale * (1.frac + tiny), rounded once, RNE.

    frac: fraction bits below the hidden bit, MSB first, any width; sticky: the exact value lies
    strictly above the given bits (by less than one unit of frac's LSB). Rounding acts on the
    regime+exponent+fraction bit string, ties to the even pattern; magnitudes above maxpos give
    maxpos and nonzero ones below minpos give minpos. `nar` wins over `zero`, which wins over the value.
    """
    body, up = round_body(m, fmt, Const(0, 1), scale, frac, sticky, name)
    # -(body + up) = ~body + (1 - up): one adder rounds and negates.
    n = fmt.n
    return posit_code(m, fmt, sign, body ^ sign.replicate(n - 1), up ^ sign, zero, nar, name)


def round_signed(m, fmt, sign, scale, frac, sticky=0, zero=0, nar=0, name="enc"):
    """The n-bit posit code of 2**scale * (sign ? -2 + 0.frac : 1 + 0.frac) (+ tiny), rounded once,
    RNE, without negating anything: the two's complement significand of decode_signed.

    frac: fraction bits, MSB first, any width; sticky: the exact value lies strictly above the given
    bits (towards +infinity, by less than one unit of frac's LSB). Clamps as round_to_posit.
    """
    body, up = round_body(m, fmt, sign, scale, frac, sticky, name)
    return posit_code(m, fmt, sign, body, up, zero, nar, name)


# ----- Components on the common unpacked layout ---------------------------------------------------

class PositDecoder(wiring.Component):
    """Combinational: posit code `i` (n bits) → exact unpacked value `o`.

    o = unpacked_layout(sig_bits = frac_bits + 1, exp_bits): value = (-1)**sign * sig * 2**exp with
    the hidden bit at sig's MSB; zero for code 0, nan for NaR; inf never set.
    """

    def __init__(self, fmt):
        self.format = posit_format(fmt)
        f = self.format.frac_bits
        self.sig_bits = f + 1
        self.exp_bits = signed_bits(-self.format.max_scale - f, self.format.max_scale - f)
        super().__init__({"i": In(self.format.n),
                          "o": Out(unpacked_layout(self.sig_bits, self.exp_bits))})

    def elaborate(self, platform):
        m = Module()
        fields = decode(m, self.format, self.i)
        m.d.comb += [
            self.o.sign.eq(fields["sign"] & ~fields["zero"] & ~fields["nar"]),
            self.o.exp.eq(fields["scale"] - self.format.frac_bits),
            self.o.sig.eq(Cat(fields["frac"], ~fields["zero"] & ~fields["nar"])),
            self.o.zero.eq(fields["zero"]),
            self.o.nan.eq(fields["nar"]),
        ]
        return m


def posit_decoder(fmt):
    """A PositDecoder for fmt (see there)."""
    return PositDecoder(fmt)


class PositEncoder(wiring.Component):
    """Combinational: exact value `i` = rounding_layout(sig_bits, exp_bits) → posit code `o`, one RNE
    rounding.

    nan and inf give NaR (a posit has no infinity); zero, or sig = 0, gives 0 (a sticky bit alone
    carries no magnitude); finite values clamp to ±maxpos / ±minpos, never 0 or NaR.
    """

    def __init__(self, fmt, sig_bits, exp_bits):
        self.format = posit_format(fmt)
        for name, value, lo, hi in (("sig_bits", sig_bits, 1, 1024), ("exp_bits", exp_bits, 2, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise SpecError(f"{name}={value!r}: must be an integer in {lo}..{hi}")
        self.sig_bits, self.exp_bits = sig_bits, exp_bits
        super().__init__({"i": In(rounding_layout(sig_bits, exp_bits)), "o": Out(self.format.n)})

    def elaborate(self, platform):
        m = Module()
        value = self.i
        shifted, count = normalize(m, value.sig)
        scale = value.exp + (self.sig_bits - 1) - count
        code = round_to_posit(m, self.format, value.sign, scale, shifted[:self.sig_bits - 1], value.sticky,
                              zero=value.zero | ~value.sig.any(), nar=value.nan | value.inf)
        m.d.comb += self.o.eq(code)
        return m


def posit_encoder(fmt, sig_bits, exp_bits):
    """A PositEncoder for fmt taking rounding_layout(sig_bits, exp_bits) (see there)."""
    return PositEncoder(fmt, sig_bits, exp_bits)
