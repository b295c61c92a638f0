"""A registered integer multiply with three pipeline stages: operands, product, product again.

On ECP5 it is one MULT18X18D using its own input and output registers (Yosys 0.70 leaves those
unused when inferring); elsewhere, and in simulation, the same pipeline in plain logic.
"""
from amaranth import ClockSignal, Const, Instance, Shape, Signal

from .pipeline import data_register

LATENCY = 3
DSP_BITS = 18


def _fits_dsp(a, w):
    """Whether both operands fit the 18-bit operands of one MULT18X18D (with a common sign mode)."""
    shapes = [Shape.cast(v.shape()) for v in (a, w)]
    signed = any(s.signed for s in shapes)
    return all(s.width + (signed and not s.signed) <= DSP_BITS for s in shapes), signed


def registered_product(m, advance, a, w, name, platform=None, shape=None):
    """a * w, LATENCY cycles after its operands, every register enabled by `advance` and none
    reset (data registers, `forma.hdl.pipeline`): the operands are registered next to the
    multiplier and the product twice after it, so the routing into and out of a hard multiplier
    each gets a cycle of its own. `shape` narrows the product registers when the operands'
    ranges are known to need fewer bits than a * w's."""
    shape = shape or (a * w).shape()
    fits, signed = _fits_dsp(a, w)
    if getattr(platform, "family", None) == "ecp5" and fits:
        near = _ecp5_multiply(m, advance, a, w, name, signed)[:Shape.cast(shape).width]
    else:
        a_near = data_register(a.shape(), f"{name}_a")
        w_near = data_register(w.shape(), f"{name}_w")
        near = data_register(shape, f"{name}_near")
        with m.If(advance):
            m.d.sync += [a_near.eq(a), w_near.eq(w), near.eq(a_near * w_near)]
    product = data_register(shape, name)
    with m.If(advance):
        m.d.sync += product.eq(near)
    return product


def _ecp5_multiply(m, advance, a, w, name, signed):
    """MULT18X18D with registered inputs (clock enable `advance`) and registered output P."""
    wide = [Signal(DSP_BITS, name=f"{name}_{role}18") for role in "aw"]
    m.d.comb += [wide[0].eq(a), wide[1].eq(w)]    # sign- or zero-extended as the operand's shape
    p = Signal(2 * DSP_BITS, name=f"{name}_p")
    ports = {}
    for role, bits in zip("AB", wide):
        ports.update({f"i_{role}{i}": bits[i] for i in range(DSP_BITS)})
    ports.update({f"i_C{i}": Const(0, 1) for i in range(DSP_BITS)})
    ports.update({f"o_P{i}": p[i] for i in range(2 * DSP_BITS)})
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE", p_RESETMODE="SYNC",
        i_SIGNEDA=Const(int(signed), 1), i_SIGNEDB=Const(int(signed), 1),
        i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal(), i_CE0=advance, i_RST0=Const(0, 1),
        **ports)
    return p
