"""Integer / fixed-point format units: decode two's-complement (or unsigned) raws into the exact
unpacked value, and encode an unpacked value with ap_fixed quantization and overflow modes.

Rules are those of `sim/formats/integer.py` (`FixedFormat.encode_scaled`).
"""
from amaranth import Const, Module, Mux, Signal, signed

from ..errors import SpecError
from ..sim.formats.integer import FixedFormat
from .float_units import UnpackedDecoder, UnpackedEncoder, round_increment


def check_fixed(fmt, role):
    if not isinstance(fmt, FixedFormat):
        raise SpecError(f"{role}={fmt.name}: expected an integer or fixed-point format (e.g. int8, fixed<8,4>)")
    return fmt


class FixedDecoder(UnpackedDecoder):
    """Combinational: `code` (W-bit raw) -> `value` = (-1)**sign * sig * 2**-F exactly.

    sig is the W-bit magnitude |raw| (the most negative raw gives 2**(W-1)); zero is raw == 0.
    """

    def __init__(self, fmt):
        fmt = check_fixed(fmt, "fmt")
        super().__init__(fmt, fmt.bits, -fmt.frac_bits, -fmt.frac_bits)

    def elaborate(self, platform):
        m = Module()
        fmt, v, code = self.format, self.value, self.code
        sign = code[-1] if fmt.signed else Const(0, 1)
        m.d.comb += [
            v.sign.eq(sign),
            v.sig.eq(Mux(sign, -code, code)),
            v.exp.eq(-fmt.frac_bits),
            v.zero.eq(~code.any()),
            v.inf.eq(0),
            v.nan.eq(0),
        ]
        return m


class FixedEncoder(UnpackedEncoder):
    """Combinational: `value` (rounding_layout) -> W-bit `code` of `fmt`, one rounding.

    rounding/saturate as in `FixedFormat.modes` (None: the format's own Q and O; every Q and
    every O of ap_fixed is built). +-inf saturates under SAT/SAT_SYM and gives 0 under SAT_ZERO;
    NaN, and inf under WRAP, have no encoding (the reference raises): they give code 0.
    """

    def __init__(self, fmt, sig_bits, exp_bits, *, rounding=None, saturate=None):
        self.format = check_fixed(fmt, "fmt")
        self.rounding, self.overflow = fmt.modes(rounding, saturate)
        if self.rounding == "stochastic":
            raise SpecError(f"rounding={rounding!r}: stochastic rounding is not built in hardware")
        super().__init__(fmt, sig_bits, exp_bits)

    def elaborate(self, platform):
        m = Module()
        fmt, v = self.format, self.value
        w, width = fmt.bits, len(v.sig)
        pad = width + 1                       # fraction bits kept: all of sig, plus one

        # Place sig so that bit `pad` has weight 2**-F (one raw unit); clamp the shift where
        # the outcome no longer changes (all bits sticky, or certainly out of range).
        units = Signal(signed(len(v.exp) + (fmt.frac_bits.bit_length() + 2)))
        m.d.comb += units.eq(v.exp + fmt.frac_bits)
        shift = Mux(units < -pad, 0, Mux(units > w, w + pad, units + pad))
        placed = Signal(width + w + pad)
        m.d.comb += placed.eq(v.sig << shift[:(w + pad).bit_length()])
        whole = placed[pad:pad + w]
        guard = placed[pad - 1]
        sticky = placed[:pad - 1].any() | v.sticky
        up = round_increment(self.rounding, whole[0], guard, sticky, v.sign)
        mag = Signal(w + 1)
        m.d.comb += mag.eq(whole + up)
        huge = placed[pad + w:].any() | mag[w]

        hi = fmt.raw_max
        lo = -hi if (self.overflow == "SAT_SYM" and fmt.signed) else fmt.raw_min
        too_big = huge | (mag > hi)
        too_small = huge | (mag > -lo)
        raw = Mux(v.sign, -mag, mag)[:w]
        if self.overflow == "SAT_ZERO":
            hi = lo = 0
        out_of_range = Mux(v.sign, too_small, too_big)
        with m.If(v.nan | v.zero | (v.inf if self.overflow == "WRAP" else 0)):
            m.d.comb += self.code.eq(0)
        with m.Elif(0 if self.overflow == "WRAP" else v.inf | out_of_range):
            m.d.comb += self.code.eq(Mux(v.sign, lo, hi))
        with m.Else():
            m.d.comb += self.code.eq(raw)
        return m
