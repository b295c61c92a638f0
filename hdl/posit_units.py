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


def decode_magnitude(m, fmt, mag, name="dec"):
    """Fields of a magnitude code: dict(scale, frac, zero, nar).

    A nonzero, non-NaR magnitude is 2**scale * (1 + frac / 2**frac_bits): scale is signed (scale_bits),
    frac has fmt.frac_bits bits. The regime is counted as leading zeros of the body XOR its first
    bit, on a pad of that first bit so the all-ones body (maxpos) stops at n - 2; bits read past
    the end of the code come out as zeros, as the reference reads them.
    """
    n, es, f = fmt.n, fmt.es, fmt.frac_bits
    zero = ~mag.any()
    nar = mag[n - 1]
    if n == 2:                                   # the only finite nonzero magnitude is 1.0
        return dict(scale=Const(0, signed(2)), frac=Const(0, 0), zero=zero, nar=nar)
    first = wire(m, mag[n - 2], f"{name}_first")
    run = mag[:n - 2] ^ first.replicate(n - 2)   # zeros while the regime run continues
    pad_to = 1 << (n - 2).bit_length()           # > n - 2: at least one pad bit
    padded = Cat(first.replicate(pad_to - (n - 2)), run)
    count_bits = (pad_to - 1).bit_length()
    shifted, count = normalize(m, padded, fill=first, count_bits=count_bits, name=f"{name}_regime")
    # count = regime run length - 1; k = count for a run of ones, -(count + 1) = ~count for zeros
    k = (Cat(count, Const(0, 1)) ^ (~first).replicate(count_bits + 1)).as_signed()
    rest = (shifted ^ first.replicate(pad_to))[pad_to - (n - 2):pad_to - 1]   # n - 3 bits
    rest = Cat(Const(0, max(es + f - (n - 3), 0)), rest)                      # es + f bits
    exponent = rest[f:]
    scale = wire(m, Cat(exponent, k).as_signed(), f"{name}_scale")
    return dict(scale=scale, frac=wire(m, rest[:f], f"{name}_frac"), zero=wire(m, zero, f"{name}_zero"),
                nar=nar)


def decode(m, fmt, code, name="dec"):
    """dict(sign, scale, frac, zero, nar) of an n-bit posit code; see decode_magnitude."""
    sign, mag = posit_magnitude(m, code, fmt.n, f"{name}_mag")
    return dict(sign=sign, **decode_magnitude(m, fmt, mag, name))


# ----- rounding -----------------------------------------------------------------------------------

def _sign_extend(value, width):
    value = value.as_signed()
    if len(value) >= width:
        return value
    return Cat(value, value[-1].replicate(width - len(value))).as_signed()


def round_to_posit(m, fmt, sign, scale, frac, sticky=0, zero=0, nar=0, name="enc"):
    """The n-bit posit code of (-1)**sign * 2**scale * (1.frac + tiny), rounded once, RNE.

    frac: fraction bits below the hidden bit, MSB first, any width; sticky: the exact value lies
    strictly above the given bits (by less than one unit of frac's LSB). Rounding acts on the
    regime+exponent+fraction bit string, ties to the even pattern; magnitudes above maxpos give
    maxpos and nonzero ones below minpos give minpos. `nar` wins over `zero`, which wins over the value.
    """
    n, es, f = fmt.n, fmt.es, fmt.frac_bits
    keep = f + 1                                  # fraction bits that can survive, plus a guard bit
    if len(frac) > keep:
        sticky = frac[:len(frac) - keep].any() | sticky
        frac = frac[len(frac) - keep:]
    else:
        frac = Cat(Const(0, keep - len(frac)), frac)
    scale = _sign_extend(scale, es + 2)
    k = scale[es:].as_signed()
    k_negative = wire(m, k[-1], f"{name}_k_negative")
    # Regime seed "10" (k >= 0) or "01" (k < 0), arithmetically shifted right by k or -k-1.
    string = Cat(frac, scale[:es], k_negative, ~k_negative)
    length = len(string)                          # max(n, es + 3)
    run = (k ^ k_negative.replicate(len(k)))[:(n - 3).bit_length()] if n > 3 else Const(0, 0)
    shifted, lost = shift_right_sticky(m, string, run, fill=~k_negative, name=f"{name}_regime")
    body = shifted[length - (n - 1):]
    guard = shifted[length - n]
    sticky = shifted[:length - n].any() | lost | sticky
    up = guard & (sticky | body[0])
    above = k >= n - 2                            # scale >= max_scale: maxpos
    below = k < 2 - n                             # scale < -max_scale: minpos
    body = wire(m, Mux(above, Const((1 << (n - 1)) - 1, n - 1), Mux(below, Const(1, n - 1), body)),
                f"{name}_body")
    up = wire(m, up & ~above & ~below, f"{name}_up")
    # -(body + up) = ~body + (1 - up): one adder rounds and negates.
    low = (body ^ sign.replicate(n - 1)) + (up ^ sign)
    code = Cat(low[:n - 1], sign)
    return Mux(nar, fmt.nar_code, Mux(zero, 0, code))


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
