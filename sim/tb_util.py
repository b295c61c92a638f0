"""Helpers shared by the cocotb testbenches that run on a clock generated inside the design."""
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time


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
