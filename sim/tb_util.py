"""Helpers shared by the cocotb testbenches: clock and reset, the clock period of a design that
makes its own clock, how long a handshake may take, and the per-cycle driver of the arrays."""
import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
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


async def drive_matmul(dut, stream, rng, full_rate, beat_word, loads=()):
    """Drive one matmul through an array, cycle by cycle: beat i's payload is beat_word(i) (None
    while it must wait), `loads` go to the weight-load port `wl`; valid gaps and output
    back-pressure are random unless `full_rate`. Every output row goes to stream.receive, which
    returns a mismatch message or None. Returns the beats, the cycles, the cycle each beat was
    accepted in, the first cycle with a valid output, and the accept window (first to last
    accepted beat)."""
    sent = loaded = cycles = 0
    accepted, first_output = [], None
    limit = 50 * (len(stream.beats) + len(loads) + 4 * stream.array.latency) + 1000
    while not stream.done and cycles < limit:
        await FallingEdge(dut.clk)
        load_valid = loaded < len(loads) and (full_rate or rng.random() < 0.6)
        if loads:
            dut.wl__valid.value = int(load_valid)
            if load_valid:
                dut.wl__payload.value = loads[loaded]
        word = beat_word(sent) if sent < len(stream.beats) else None
        valid = word is not None and (full_rate or rng.random() < 0.75)
        dut.i__valid.value = int(valid)
        if valid:
            dut.i__payload.value = word
        ready = full_rate or rng.random() < 0.6
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if load_valid and dut.wl__ready.value:
            loaded += 1
        if valid and dut.i__ready.value:
            accepted.append(cycles)
            sent += 1
        if dut.o__valid.value:
            first_output = cycles if first_output is None else first_output
            if ready:
                problem = stream.receive(dut.o__payload.value.to_unsigned())
                assert problem is None, problem
        cycles += 1
    assert stream.done, (f"only {stream.rows_received} of {len(stream.flat)} output rows after "
                         f"{cycles} cycles")
    return {"beats": len(stream.beats), "cycles": cycles, "accepted": accepted,
            "first_output": first_output, "accept_window": accepted[-1] - accepted[0] + 1}


async def reset(dut, streams=("i",), selector=None):
    """Two reset cycles with every input stream in `streams` idle and the output not ready;
    `selector` (if given) drives the mutant selector port from the reset on, so mutants of the
    reset logic count too."""
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    for name in streams:
        getattr(dut, f"{name}__valid").value = 0
    dut.o__ready.value = 0
    if selector is not None:
        dut.mutsel.value = selector
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def mutation_runs(dut, streams, regression, mutants, path):
    """`regression()` once per mutant selector (0 = the original first), each from a reset
    (see `reset`); a mutant is killed by the first failing assertion. Results go to `path` as
    JSON, one entry per selector ({selector, killed: None or the failure's first line}); a
    failing original ends the runs, since no mutant means anything then."""
    results = []
    for selector in range(mutants + 1):
        await reset(dut, streams, selector)
        try:
            await regression()
            results.append({"selector": selector, "killed": None})
        except AssertionError as error:
            results.append({"selector": selector, "killed": str(error).splitlines()[0]})
        with open(path, "w") as handle:
            json.dump(results, handle)
        if selector == 0 and results[0]["killed"]:
            break
