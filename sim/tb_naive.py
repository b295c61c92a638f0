"""cocotb testbench: the naive baseline — one Python await per vector, compared in Python.

Used by the benchmark to measure what the bulk checker (forma.sim.bulk) gains.
"""
import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


@cocotb.test()
async def naive_check(dut):
    """Drive each vector, wait for its result, compare; results go to FORMA_NAIVE_RESULTS."""
    setup = json.loads(Path(os.environ["FORMA_NAIVE_SETUP"]).read_text())
    vectors, expected = setup["vectors"], setup["expected"]
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value, dut.i__valid.value, dut.o__ready.value = 1, 0, 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    mismatches, done, sent = 0, 0, 0
    began = time.perf_counter()
    while done < len(vectors):
        dut.i__valid.value = int(sent < len(vectors))
        if sent < len(vectors):
            dut.i__payload.value = vectors[sent]
        await ReadOnly()
        accepted = sent < len(vectors) and bool(dut.i__ready.value)
        if dut.o__valid.value:
            mismatches += int(dut.o__payload.value.to_unsigned() != expected[done])
            done += 1
        await RisingEdge(dut.clk)
        sent += accepted
    seconds = time.perf_counter() - began
    Path(os.environ["FORMA_NAIVE_RESULTS"]).write_text(
        json.dumps({"mismatches": mismatches, "seconds": seconds}))
    assert mismatches == 0, f"{mismatches} mismatches"
