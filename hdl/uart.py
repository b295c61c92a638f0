"""UART (8N1) receiver and transmitter as byte streams, and a board top serving a network on them.

Wire protocol of `UartNetworkTop`: the host sends one input row, every code as ceil(bits/8) bytes,
little-endian, in the network's input order; the board answers with every output code the same way.
"""
from amaranth import Cat, Module, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError


def baud_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit (rounded to nearest); SpecError if the rate error exceeds 2 %."""
    divisor = round(clk_hz / baud)
    if divisor < 4 or abs(clk_hz / divisor - baud) > 0.02 * baud:
        raise SpecError(f"baud {baud} at {clk_hz / 1e6:g} MHz: {clk_hz / baud:.2f} cycles per bit "
                        "is too few or too inexact; use a lower baud rate")
    return divisor


class UartRx(wiring.Component):
    """Samples `rx` (synchronized) at mid-bit; each received byte is one stream transfer.

    A byte arriving while the previous one is still not taken overwrites it (the host protocol
    waits for answers, so this never happens in use).
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        rx_meta, rx = Signal(init=1), Signal(init=1)
        m.d.sync += [rx_meta.eq(self.rx), rx.eq(rx_meta)]
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += [timer.eq(self.divisor * 3 // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):  # first sample 1.5 bits after the start edge
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1),
                                 shift.eq(Cat(shift[1:], rx))]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Sends each byte of the input stream as start bit, 8 data bits (LSB first), stop bit."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"tx": Out(1, init=1), "i": In(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        frame = Signal(10, init=0x3FF)
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), left.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [frame.eq(Cat(frame[1:], 1)), left.eq(left - 1),
                         timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class Widen(wiring.Component):
    """Assembles `count` bytes (little-endian) into one `width`-bit word stream."""

    def __init__(self, width: int):
        self.count = -(-width // 8)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        word = Signal(8 * self.count)
        index = Signal(range(self.count + 1))
        m.d.comb += [self.o.payload.eq(word), self.i.ready.eq(~self.o.valid)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & ~self.o.valid):
            m.d.sync += word.eq(Cat(word[8:], self.i.payload)) if self.count > 1 else \
                word.eq(self.i.payload)
            m.d.sync += index.eq(index + 1)
            with m.If(index == self.count - 1):
                m.d.sync += [index.eq(0), self.o.valid.eq(1)]
        return m


class Narrow(wiring.Component):
    """Splits each `width`-bit word into ceil(width/8) bytes, least significant first."""

    def __init__(self, width: int):
        self.count = -(-width // 8)
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        word = Signal(8 * self.count)
        left = Signal(range(self.count + 1))
        m.d.comb += [self.o.payload.eq(word[:8]), self.o.valid.eq(left != 0),
                     self.i.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [word.eq(self.i.payload), left.eq(self.count)]
        with m.Elif(self.o.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        return m


class UartNetworkTop(wiring.Component):
    """Board top: UART receiver -> byte-to-code -> `network` -> code-to-bytes -> UART transmitter.

    `network` is a streaming component (i/o valid/ready code streams); it becomes submodule
    `block_name`. Without a platform the UART pins are the `rx`/`tx` ports (for simulation).
    """

    def __init__(self, network, clk_hz: float, baud: int = 115200, block_name: str = "block"):
        self.network = network
        self.block_name = block_name
        self.divisor = baud_divisor(clk_hz, baud)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        net = self.network
        m.submodules.rx = rx = UartRx(self.divisor)
        m.submodules.widen = widen = Widen(len(net.i.payload))
        m.submodules[self.block_name] = net
        m.submodules.narrow = narrow = Narrow(len(net.o.payload))
        m.submodules.tx = tx = UartTx(self.divisor)
        wiring.connect(m, rx.o, widen.i)
        wiring.connect(m, widen.o, net.i)
        wiring.connect(m, net.o, narrow.i)
        wiring.connect(m, narrow.o, tx.i)
        if platform is None:
            m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        else:
            pins = platform.request("uart", 0, dir="-")
            m.submodules.rx_pin = rx_pin = io.Buffer("i", pins.rx)
            m.submodules.tx_pin = tx_pin = io.Buffer("o", pins.tx)
            m.d.comb += [rx.rx.eq(rx_pin.i), tx_pin.o.eq(tx.tx)]
        return m
