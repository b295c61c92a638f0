"""cocotb testbench for mutation runs (see forma.sim.mutate): the bulk checker once per mutant.

Each mutant starts from its own reset (mutants of the reset logic count), stops at its first
mismatch, and counts as hung when no result arrives in time; results go to a JSON file, one
entry per selector.
"""
import json
import os
import shutil
from pathlib import Path

import cocotb
from cocotb.triggers import First, FallingEdge, ReadOnly, RisingEdge, Timer

from .tb_util import clock_period, handshake_limit


async def _run_selector(dut, selector, count, timeout_steps):
    """One pass of every vector with `selector` active: {mismatches, index, got, hung}."""
    await FallingEdge(dut.clk)
    dut.mutsel.value, dut.rst.value, dut.start.value = selector, 1, 0
    await FallingEdge(dut.clk)
    dut.rst.value, dut.start.value = 0, 1
    dut.count.value = count
    await FallingEdge(dut.clk)
    dut.start.value = 0
    timeout = Timer(timeout_steps, unit="step")
    while True:
        fired = await First(RisingEdge(dut.done), dut.mismatches.value_change, timeout)
        await ReadOnly()
        mismatches = int(dut.mismatches.value)
        if fired is timeout or mismatches or int(dut.done.value):
            break
    hung = not mismatches and not int(dut.done.value)
    first = (int(dut.err_index_0.value), int(dut.err_got_0.value)) if mismatches else (None, None)
    return {"selector": selector, "mismatches": mismatches, "index": first[0], "got": first[1],
            "hung": hung}


@cocotb.test()
async def mutation_check(dut):
    """Selector 0 (the original) runs every vector, then each mutant until it mismatches; the
    verdicts are judged in Python (forma.sim.mutate), so a failing mutant never fails this test."""
    setup = json.loads(Path(os.environ["FORMA_MUTATE_SETUP"]).read_text())
    shutil.copyfile(Path(setup["dir"]) / "stim_0.hex", "stim.hex")
    shutil.copyfile(Path(setup["dir"]) / "expect_0.hex", "expect.hex")
    dut.rst.value, dut.start.value, dut.mutsel.value = 1, 0, 0
    dut.stall.value = int(setup["stall"])
    period = await clock_period(dut)
    timeout_steps = handshake_limit(period, setup["count"])
    results = []
    for selector in range(setup["mutants"] + 1):
        results.append(await _run_selector(dut, selector, setup["count"], timeout_steps))
        Path(os.environ["FORMA_MUTATE_RESULTS"]).write_text(json.dumps(results))
        if selector == 0 and (results[0]["mismatches"] or results[0]["hung"]):
            break  # the unmutated netlist must pass before any mutant means anything
