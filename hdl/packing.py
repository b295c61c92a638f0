"""DSP packing: several narrow products a*w_i from one hardware multiplier that shares operand a.

The weights are packed as W = sum(w_i * 2**(i*k)); the product a*W is split back into the exact
a*w_i by sign-extending each k-bit field and carrying its sign into the next (the correction term).
"""
from dataclasses import dataclass

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from .mac import holding_format, int_shape, interval_product, product_range

MULTIPLIER_BITS = 18   # operand width of the target's hard multiplier (ECP5 MULT18X18D)
MAX_FACTOR = 8


@dataclass(frozen=True)
class PackingPlan:
    """`factor` products of a (a_format) by w_i (w_format) per multiplier, `shift` bits apart."""
    a_format: object
    w_format: object
    factor: int
    shift: int              # k: the bit distance of consecutive products in a*W
    product_signed: bool

    @property
    def packed_range(self):
        """(min, max) of W = sum(w_i << i*k): every w_i at its minimum, or every one at its
        maximum."""
        scale = sum(1 << (index * self.shift) for index in range(self.factor))
        return self.w_format.raw_min * scale, self.w_format.raw_max * scale

    @property
    def packed_format(self):
        """The integer format holding every W; a negative w_i borrows from the field above, so a
        signed W can need one bit more than its fields."""
        return holding_format(*self.packed_range)

    @property
    def packed_shape(self):
        return int_shape(self.packed_format)

    @property
    def packed_product_shape(self):
        """Shape of the multiplier's product a*W: exactly as wide as its range needs (a*W's
        operand widths alone can claim a bit that only ever copies the sign)."""
        lo, hi = interval_product(self.a_format.raw_min, self.a_format.raw_max, *self.packed_range)
        return int_shape(holding_format(lo, hi))

    @property
    def product_shape(self):
        """Shape of one exact product a*w_i."""
        return signed(self.shift) if self.product_signed else unsigned(self.shift)

    def multiplier_bits(self):
        """(a, W) operand widths as the multiplier sees them (unsigned operands of a signed
        multiply gain a zero sign bit)."""
        any_signed = self.a_format.signed or self.w_format.signed
        def width(bits, is_signed):
            return bits + (1 if any_signed and not is_signed else 0)
        packed = self.packed_format
        return (width(self.a_format.bits, self.a_format.signed),
                width(packed.bits, packed.signed))


def packing_plan(a_format, w_format, factor):
    """The plan for `factor` products per multiplier (no width check; see `choose_packing`)."""
    lo, hi = product_range(a_format, w_format)
    return PackingPlan(a_format, w_format, factor, holding_format(lo, hi).bits, lo < 0)


def fits(plan, multiplier_bits=MULTIPLIER_BITS):
    """Whether both operands of the plan's multiply fit a multiplier_bits x multiplier_bits one."""
    if (plan.factor - 1) * plan.shift + plan.w_format.bits > multiplier_bits:
        return False  # the fields alone are too wide (and W may exceed any integer format)
    return all(bits <= multiplier_bits for bits in plan.multiplier_bits())


def max_factor(a_format, w_format, multiplier_bits=MULTIPLIER_BITS):
    """The most products of a_format x w_format one multiplier_bits-wide multiplier can give."""
    best = 1
    for factor in range(2, MAX_FACTOR + 1):
        if fits(packing_plan(a_format, w_format, factor), multiplier_bits):
            best = factor
    return best


def choose_packing(a_format, w_format, packing, lanes, multiplier_bits=MULTIPLIER_BITS):
    """The plan for `packing` ("auto", "off" or a factor) over `lanes` products sharing a.

    "auto": the largest factor that fits the multiplier and divides `lanes`; "off": 1. An explicit
    factor that does not fit or does not divide `lanes` raises SpecError naming `packing`.
    """
    if packing in ("off", 1, "1"):
        return packing_plan(a_format, w_format, 1)
    most = max_factor(a_format, w_format, multiplier_bits)
    if packing == "auto":
        factor = max(f for f in range(1, most + 1) if lanes % f == 0)
        return packing_plan(a_format, w_format, factor)
    try:
        factor = int(packing)
    except (TypeError, ValueError):
        raise SpecError(f"packing={packing}: use auto, off or a factor 1..{MAX_FACTOR}") from None
    if not 1 <= factor <= MAX_FACTOR:
        raise SpecError(f"packing={packing}: use auto, off or a factor 1..{MAX_FACTOR}")
    plan = packing_plan(a_format, w_format, factor)
    if not fits(plan, multiplier_bits):
        fields = (factor - 1) * plan.shift + w_format.bits
        need = max(plan.multiplier_bits()) if fields <= multiplier_bits else fields
        raise SpecError(
            f"packing={factor}: {factor} products {a_format.name} x {w_format.name} need at "
            f"least a {need}-bit multiplier operand ({plan.shift} bits per product), wider "
            f"than the {multiplier_bits}-bit multiplier; at most {most} "
            f"fit{'s' if most == 1 else ''}")
    if lanes % factor:
        raise SpecError(f"packing={factor}: the factor must divide the {lanes} columns that "
                        f"share an activation")
    return plan


def pack_weights(plan, weights):
    """W = sum(w_i << i*k) as an Amaranth value of plan.packed_shape (weights: factor values)."""
    total = weights[0]
    for index, weight in enumerate(weights[1:], start=1):
        total = total + (weight << (index * plan.shift))
    return total


def split_products(plan, product):
    """The exact products a*w_i (LSB first) from the multiplier output `product` = a*W.

    Each k-bit field is the next product modulo 2**k; a negative field borrowed one from the field
    above, so its sign bit is added back there. Exact (no rounding) for every operand pair.
    """
    k, parts, rest = plan.shift, [], product
    for _ in range(plan.factor - 1):
        field = rest[:k]
        if plan.product_signed:
            parts.append(field.as_signed())
            rest = rest[k:].as_signed() + field[-1]
        else:
            parts.append(field)
            rest = rest[k:]
    last = rest[:k]
    parts.append(last.as_signed() if plan.product_signed else last)
    return parts


class PackedMultiplier(wiring.Component):
    """Registered a * w_i for i < factor through one multiplier (the unit `split_products` proves).

    Input payload: `a` and `w` (an array of `factor` weights); output payload: the `factor`
    exact products, one pipeline stage later. A stalled output holds the input.
    """

    def __init__(self, a_format, w_format, factor, multiplier_bits=MULTIPLIER_BITS):
        self.plan = choose_packing(a_format, w_format, factor, factor, multiplier_bits)
        self.latency = 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": int_shape(a_format),
                "w": data.ArrayLayout(int_shape(w_format), factor)}))),
            "o": Out(stream.Signature(data.ArrayLayout(self.plan.product_shape, factor))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        packed = Signal(self.plan.packed_shape)
        m.d.comb += packed.eq(pack_weights(self.plan, list(self.i.payload.w)))
        products = split_products(self.plan, self.i.payload.a * packed)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(Cat(*products))]
        return m
