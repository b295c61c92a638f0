"""Helpers shared by the cocotb testbenches: clock and reset, the clock period of a design that
makes its own clock, how long a handshake may take, and the per-cycle driver of the arrays."""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from .runner import mutation_config


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


def junk(rng, signal):
    """Random bits as wide as `signal`: what a payload carries while its valid is low, so logic
    that reads a payload without its valid shows up."""
    return int.from_bytes(rng.bytes((len(signal) + 7) // 8), "little") % (1 << len(signal))


async def drive_matmul(dut, stream, rng, full_rate, beat_word, loads=()):
    """Drive one matmul through an array, cycle by cycle: beat i's payload is beat_word(i) (None
    while it must wait), `loads` go to the weight-load port `wl`; valid gaps and output
    back-pressure are random unless `full_rate`. Every output row goes to stream.receive, which
    returns a mismatch message or None. Returns the beats, the cycles, the cycle each beat was
    accepted in, the first cycle with a valid output, and the accept window (first to last
    accepted beat). Payloads carry random bits while their valid is low."""
    sent = loaded = cycles = 0
    accepted, first_output = [], None
    limit = 50 * (len(stream.beats) + len(loads) + 4 * stream.array.latency) + 1000
    while not stream.done and cycles < limit:
        await FallingEdge(dut.clk)
        load_valid = loaded < len(loads) and (full_rate or rng.random() < 0.6)
        if loads:
            dut.wl__valid.value = int(load_valid)
            dut.wl__payload.value = loads[loaded] if load_valid else junk(rng, dut.wl__payload)
        word = beat_word(sent) if sent < len(stream.beats) else None
        valid = word is not None and (full_rate or rng.random() < 0.75)
        dut.i__valid.value = int(valid)
        dut.i__payload.value = word if valid else junk(rng, dut.i__payload)
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
    reset logic count too. Returns just after the last reset edge, so what is driven at the
    next falling edge meets the very first cycle out of reset."""
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    for name in streams:
        getattr(dut, f"{name}__valid").value = 0
    dut.o__ready.value = 0
    if selector is not None:
        dut.mutsel.value = selector
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def record_handshakes(dut, streams, trace):
    """Append to `trace`, every cycle, the valid and ready bits of the input streams `streams`
    and of the output `o`, as the cycle's rising edge will see them."""
    signals = [getattr(dut, f"{name}__{bit}") for name in (*streams, "o")
               for bit in ("valid", "ready")]
    while True:
        await FallingEdge(dut.clk)
        await ReadOnly()
        trace.append(tuple(int(signal.value) for signal in signals))


def first_difference(trace, original):
    """The first cycle at which two handshake traces differ (None if they are equal)."""
    if trace == original:
        return None
    return next((cycle for cycle, (mine, theirs) in enumerate(zip(trace, original))
                 if mine != theirs), min(len(trace), len(original)))


async def mutation_runs(dut, streams, regression, mutants, path):
    """`regression()` once per mutant selector (0 = the original first), each from a reset
    (see `reset`). A mutant is killed by the first failing assertion, or else by a handshake
    (valid and ready of every stream, cycle by cycle) that differs from the original's: the
    stimulus is the same, so any difference is a change visible at the ports. Results go to
    `path` as JSON, one entry per selector ({selector, killed: None or why}); a failing original
    ends the runs, since no mutant means anything then."""
    results, original = [], None
    for selector in range(mutants + 1):
        await reset(dut, streams, selector)
        trace = []
        recorder = cocotb.start_soon(record_handshakes(dut, streams, trace))
        try:
            await regression()
            killed = None
        except AssertionError as error:
            killed = str(error).splitlines()[0]
        recorder.cancel()
        if selector == 0:
            original = trace
        elif killed is None and (cycle := first_difference(trace, original)) is not None:
            killed = f"handshake differs from the original's at cycle {cycle} after reset"
        results.append({"selector": selector, "killed": killed})
        with open(path, "w") as handle:
            json.dump(results, handle)
        if selector == 0 and killed:
            break


async def run_array_test(dut, streams, regression, spec, seed, mutant_run=None):
    """The body of an array testbench: start the clock; under `runner.mutation_env` run
    `mutant_run` (default `regression`) once per mutant (mutation_runs); otherwise run
    `regression()` once from a reset and write its stats, with spec and seed, to the JSON file
    FORMA_ARRAY_STATS names (if set)."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    mutants = mutation_config()
    if mutants:
        await mutation_runs(dut, streams, mutant_run or regression, *mutants)
        return
    await reset(dut, streams)
    stats = await regression()
    path = os.environ.get("FORMA_ARRAY_STATS")
    if path:
        with open(path, "w") as handle:
            json.dump({"spec": spec, "seed": seed, **stats}, handle)
