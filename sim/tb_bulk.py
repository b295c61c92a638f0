"""cocotb testbench for the bulk checker (see forma.sim.bulk): one await per chunk, not per vector.

Copies each chunk's memory files into place, pulses `start`, waits for `done`, collects counters.
"""
import json
import os
import shutil
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge, with_timeout

from .bulk import CAPTURED
from .tb_util import clock_period, handshake_limit


@cocotb.test()
async def bulk_check(dut):
    """Every lane's results equal the expectations; mismatches are counted and the first kept."""
    manifest = json.loads(Path(os.environ["FORMA_BULK_MANIFEST"]).read_text())
    chunk_dir = Path(manifest["dir"])
    dut.rst.value, dut.start.value = 1, 0
    dut.stall.value = int(manifest["stall"])
    period = await clock_period(dut)
    dut.rst.value = 0
    mismatches, first, seconds = 0, [], 0.0
    for number, chunk in enumerate(manifest["chunks"]):
        shutil.copyfile(chunk_dir / f"stim_{number}.hex", "stim.hex")
        shutil.copyfile(chunk_dir / f"expect_{number}.hex", "expect.hex")
        dut.count.value = chunk["count"]
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        began = time.perf_counter()
        try:
            await with_timeout(RisingEdge(dut.done), handshake_limit(period, chunk["count"]), "step")
        except TimeoutError:
            raise AssertionError(f"chunk {number}: the PE stopped answering (no result for "
                                 f"{4 * chunk['count'] + 1000} cycles): a stuck valid/ready "
                                 f"handshake") from None
        seconds += time.perf_counter() - began
        mismatches += int(dut.mismatches.value)
        for k in range(min(int(dut.captured.value), CAPTURED)):
            index = chunk["start"] + int(getattr(dut, f"err_index_{k}").value)
            first.append((index, int(getattr(dut, f"err_got_{k}").value)))
    Path(os.environ["FORMA_BULK_RESULTS"]).write_text(
        json.dumps({"mismatches": mismatches, "first": first, "seconds": seconds}))
    assert mismatches == 0, f"{mismatches} mismatches; first (index, got): {first[:CAPTURED]}"
