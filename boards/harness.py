"""A harness that builds any block on a board with few pins: LFSR-fed inputs, XOR-folded outputs.

Every input bit comes from a register chain fed by an LFSR mixed with the buttons; every output
bit is registered and folded into the LEDs, so synthesis can remove nothing from the block.
"""
from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

LFSR_WIDTH = 32
LFSR_TAPS = 0x80200003  # x^32 + x^22 + x^2 + x + 1, maximal length
FOLD = 4                # bits XORed per LUT level; every level is registered
BLOCK_NAME = "block"    # submodule name of the block inside the harness


def block_ports(block):
    """(inputs, outputs): the block's port values as flat lists, in signature order."""
    inputs, outputs = [], []
    for _path, member, value in block.signature.flatten(block):
        (inputs if member.flow == wiring.In else outputs).append(Value.cast(value))
    return inputs, outputs


class Harness(wiring.Component):
    """Drives every input of `block` and observes every output through `buttons` and `leds`."""

    def __init__(self, block, *, buttons=4, leds=8):
        if not isinstance(block, wiring.Component):
            raise TypeError(f"the block must be an amaranth wiring.Component, not {block!r}")
        self.block = block
        super().__init__({"buttons": In(buttons), "leds": Out(leds)})

    def elaborate(self, platform):
        m = Module()
        m.submodules[BLOCK_NAME] = self.block
        inputs, outputs = block_ports(self.block)

        lfsr = Signal(LFSR_WIDTH, init=1)
        m.d.sync += lfsr.eq((lfsr >> 1) ^ Mux(lfsr[0], LFSR_TAPS, 0))
        fresh = lfsr ^ self.buttons

        # A shift chain of fresh random words: no logic between registers, all bits distinct.
        in_bits = sum(len(v) for v in inputs)
        if in_bits:
            chain = Signal(in_bits)
            m.d.sync += chain.eq(Cat(fresh, chain)[:in_bits])
            offset = 0
            for value in inputs:
                m.d.comb += value.eq(chain[offset:offset + len(value)])
                offset += len(value)

        level = Signal(max(1, sum(len(v) for v in outputs)))
        m.d.sync += level.eq(Cat(*outputs))
        m.d.comb += self.leds.eq(self._fold(m, level, len(self.leds)))
        return m

    @staticmethod
    def _fold(m, level, width):
        """Registered XOR tree that reduces `level` to `width` bits, FOLD bits per stage."""
        while len(level) > width:
            n = max(width, -(-len(level) // FOLD))
            folded = Signal(n)
            m.d.sync += folded.eq(Cat(level[i::n].xor() for i in range(n)))
            level = folded
        return level


class BoardTop(Elaboratable):
    """The top for a platform: the harness wired to the board's buttons, switches and LEDs."""

    def __init__(self, block):
        self.block = block

    def elaborate(self, platform):
        m = Module()
        buttons, leds = [], []
        for name, number in _resources(platform, "button", "switch", "led"):
            direction = "o" if name == "led" else "i"
            buffer = io.Buffer(direction, platform.request(name, number, dir="-"))
            m.submodules[f"{name}_{number}"] = buffer
            (leds if name == "led" else buttons).append(getattr(buffer, direction))
        m.submodules.harness = harness = Harness(self.block, buttons=len(Cat(buttons)),
                                                 leds=len(Cat(leds)))
        m.d.comb += [harness.buttons.eq(Cat(buttons)), Cat(leds).eq(harness.leds)]
        return m


def _resources(platform, *names):
    return [key for key in platform.resources if key[0] in names]


def block_module(top: str = "top", board: bool = True) -> str:
    """Name of the block's module in the RTLIL Amaranth emits for the harness top."""
    return f"{top}.harness.{BLOCK_NAME}" if board else f"{top}.{BLOCK_NAME}"
