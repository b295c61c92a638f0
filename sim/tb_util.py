"""Helpers shared by the cocotb testbenches: clock and reset, the clock period of a design that
makes its own clock, and how long a handshake may take."""
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time


async def start(dut, ready=0):
    """Start a 10 ns clock and hold reset for two cycles with no input valid and the output
    ready set to `ready`."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = ready
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def clock_period(dut):
    """The period of `dut.clk` in simulator steps, measured over one cycle."""
    await RisingEdge(dut.clk)
    began = get_sim_time("step")
    await RisingEdge(dut.clk)
    return get_sim_time("step") - began


def handshake_limit(period, count):
    """Simulator steps after which `count` results should long have arrived: four cycles per
    result (random back-pressure included) plus the pipeline fill."""
    return period * (4 * count + 1000)
