"""Pipeline registers of the arrays, moving on the cycles when `advance` is high.

Data registers (operands, weights, products, partial sums, results, and an os tile's `last` bit,
which is read only together with its valid) take no reset: each one is written before a valid
beat reads it, so a reset would only load the reset net. Control registers (valid, swap,
counters) reset, and with them every valid in flight.
"""
from amaranth import Shape, Signal


def data_register(shape, name):
    """A data register: no reset, see the module docstring."""
    return Signal(shape, name=name, reset_less=True)


def delay(m, advance, value, cycles, name, *, data):
    """`value` through `cycles` registers that move when `advance` is high; `data` registers
    take no reset (a valid or swap bit must reset)."""
    shape = value.shape() if hasattr(value, "shape") else Shape.cast(len(value))
    for index in range(cycles):
        register = Signal(shape, name=f"{name}_d{index}", reset_less=data)
        with m.If(advance):
            m.d.sync += register.eq(value)
        value = register
    return value
