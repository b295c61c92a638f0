"""MX block dot-product PE: two blocks of k element codes with their E8M0 scales in, the exact
2**(sa + sb) * sum(a_i * b_i) rounded once to an output format out (one result per block pair).

The products are summed exactly in a two's-complement fixed-point adder tree; the scales only
move the exponent handed to the output format's encoder.
"""
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from ..sim.formats.mx import MXFormat
from .float_mac import kulisch_width
from .float_pe import (Pipeline, check_stages, connect_value, decoder_for, encoder_for,
                       multiply_unpacked, unit_ports)
from .float_units import signed_bits
from .unpacked import rounding_layout

OUT_FAMILIES = ("float", "int", "fixed", "posit")


def mx_format(fmt, role="fmt"):
    """The MXFormat named or given by `fmt`; SpecError unless its scales are E8M0 powers of two."""
    if isinstance(fmt, str):
        fmt = parse_format(fmt)
    if not isinstance(fmt, MXFormat):
        raise SpecError(f"{role}={fmt.name}: expected an MX block format (mxfp8_e4m3, mxfp8_e5m2, "
                        f"mxfp6_e3m2, mxfp6_e2m3, mxfp4 or mxint8)")
    if fmt.scale_format.name != "float8_e8m0fnu":
        raise SpecError(f"{role}={fmt.name}: its {fmt.scale_format.name} scales are not powers of "
                        f"two; the MX dot PE takes E8M0-scaled formats (mxfp8_e4m3, mxfp8_e5m2, "
                        f"mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8)")
    return fmt


def _adder_tree(m, pipe, terms, side):
    """Pairwise sum of signed `terms` in log depth, every partial sum as wide as the terms (the
    accumulator bound covers any subset); the `partial` cut registers the partial sums halfway
    down, with the `side` values that travel alongside. Returns (sum, side)."""
    cut_level = (len(terms) - 1).bit_length() // 2
    level = 0
    while True:
        if level == cut_level:
            registered = pipe.cut("partial", *terms, *side)
            terms, side = list(registered[:len(terms)]), registered[len(terms):]
        if len(terms) == 1:
            return terms[0], side
        pairs = [terms[i:i + 2] for i in range(0, len(terms), 2)]
        sums = []
        for index, pair in enumerate(pairs):
            if len(pair) == 1:
                sums.append(pair[0])
                continue
            partial = Signal.like(pair[0], name=f"sum{level + 1}_{index}")
            m.d.comb += partial.eq(pair[0] + pair[1])
            sums.append(partial)
        terms = sums
        level += 1


def _any(flags):
    result = flags[0]
    for flag in flags[1:]:
        result = result | flag
    return result


class MXDotPE(wiring.Component):
    """One block pair per beat: out = out_fmt code of 2**(sa + sb - 2 bias) * sum_i a_i * b_i.

    fmt: an E8M0-scaled MX format or its name (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3,
    mxfp4, mxint8); out_fmt: float (default float32), integer/fixed-point or posit format.
    Input payload {a, b, sa, sb}: a, b hold k = fmt.block_size element codes (element i in bits
    [i*w, (i+1)*w) of its field, w = fmt.bits), sa, sb the E8M0 scale codes. The sum is exact
    (`acc_bits` two's-complement bits) and rounded once: round to nearest even, non-saturating,
    as `fmt.block_dot(sa, a, sb, b, out_fmt)`. Specials: a NaN scale (0xFF) or NaN element, an
    inf * 0 product or +inf with -inf give NaN; other infinite products give that infinity; an
    exact zero sum is +0. A format without NaN (or without inf) gets what its encoder makes of
    them (code 0 for NaN in finite and fixed-point formats).
    stages 1..4: registers after the output, the exact sum, the aligned products, half the
    adder tree; `latency` = stages cycles. A stalled output (valid, not ready) holds the pipeline.
    """

    CUTS = ("sum", "products", "partial")

    def __init__(self, fmt, out_fmt="float32", *, stages=1):
        self.format = mx_format(fmt)
        out = parse_format(out_fmt) if isinstance(out_fmt, str) else out_fmt
        if out.family not in OUT_FAMILIES:
            raise SpecError(f"out_fmt={out.name}: the MX dot PE rounds to a float, integer, "
                            f"fixed-point or posit format, not {out.family}")
        self.out_format = out
        self.latency = self.stages = check_stages(stages, self.CUTS)
        self.element_format = self.format.element_format
        self.block_size = self.format.block_size
        self.acc_bits, self.acc_lsb = kulisch_width(self.element_format, self.element_format,
                                                    self.block_size)
        scale_bits = self.format.scale_format.bits
        field = self.block_size * self.format.bits
        payload = data.StructLayout({"a": field, "b": field, "sa": scale_bits, "sb": scale_bits})
        self._encoder_options = {} if out.family == "posit" else {"rounding": "rne", "saturate": False}
        check = encoder_for(out, self.acc_bits, 2, **self._encoder_options)   # SpecError early
        check._MustUse__silence = True
        super().__init__({
            "i": In(stream.Signature(payload)),
            "o": Out(stream.Signature(out.bits)),
        })

    def _products(self, m, payload):
        """Per element pair: the exact product as a signed term on the accumulator's LSB, and
        the product's special flags (nan, +inf, -inf)."""
        w, lsb = self.format.bits, self.acc_lsb
        terms, nans, pos_infs, neg_infs = [], [], [], []
        for index in range(self.block_size):
            values = []
            for role in "ab":
                unit = m.submodules[f"decode_{role}{index}"] = decoder_for(self.element_format)
                code, value = unit_ports(unit)
                m.d.comb += code.eq(payload[role][index * w:(index + 1) * w])
                values.append((unit, value))
            (unit_a, x), (unit_b, y) = values
            product = multiply_unpacked(m, x, y, luts=True)
            shift = Signal(range(unit_a.exp_max + unit_b.exp_max - lsb + 1), name=f"shift{index}")
            m.d.comb += shift.eq(product.exp - lsb)
            aligned = Mux(product.zero | product.inf | product.nan, 0, product.sig << shift)
            term = Signal(signed(self.acc_bits), name=f"term{index}")
            m.d.comb += term.eq(Mux(product.sign, -aligned, aligned))
            terms.append(term)
            nans.append(product.nan)
            pos_infs.append(product.inf & ~product.sign)
            neg_infs.append(product.inf & product.sign)
        return terms, _any(nans), _any(pos_infs), _any(neg_infs)

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipe = Pipeline(m, advance, self.i.valid, self.CUTS[:self.stages - 1])
        code = self.block_dot(m, pipe, self.i.payload)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(pipe.valid), self.o.payload.eq(code)]
        return m

    def block_dot(self, m, pipe, payload):
        """The datapath in module `m`: the out_format code of the block pair in `payload` (a
        View of `i`'s payload layout), registered at `pipe`'s cut points (a Pipeline whose cuts
        are among CUTS[1:]; the caller registers the code)."""
        terms, nan, pos_inf, neg_inf = self._products(m, payload)
        sa, sb, scales = payload.sa, payload.sb, self.format.scale_format
        nan = nan | (sa == scales.nan_code) | (sb == scales.nan_code) | (pos_inf & neg_inf)
        scale = Signal(len(sa) + 1)
        m.d.comb += scale.eq(sa + sb)
        *terms, nan, pos_inf, neg_inf, scale = pipe.cut("products", *terms, nan, pos_inf, neg_inf, scale)
        tree_sum, (nan, pos_inf, neg_inf, scale) = _adder_tree(m, pipe, terms, (nan, pos_inf, neg_inf, scale))
        total = Signal(signed(self.acc_bits))
        m.d.comb += total.eq(tree_sum)
        total, nan, pos_inf, neg_inf, scale = pipe.cut("sum", total, nan, pos_inf, neg_inf, scale)

        lsb = self.acc_lsb - 2 * scales.bias
        value = Signal(rounding_layout(self.acc_bits, signed_bits(lsb, lsb + 2 * scales.nan_code)))
        inf = (pos_inf | neg_inf) & ~nan
        zero = ~total.any()
        m.d.comb += [
            value.sig.eq(Mux(total[-1], -total, total)),
            value.exp.eq(scale + lsb),
            value.sticky.eq(0),
            value.nan.eq(nan),
            value.inf.eq(inf),
            value.zero.eq(zero & ~nan & ~inf),
            value.sign.eq(Mux(inf, neg_inf, total[-1])),
        ]
        encoder = m.submodules.encode = encoder_for(self.out_format, len(value.sig), len(value.exp),
                                                    **self._encoder_options)
        port_in, code = unit_ports(encoder)
        connect_value(m, port_in, value)
        return code
