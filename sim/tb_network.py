"""cocotb testbench: streams input code rows through a generated network top and records outputs.

Reads FORMA_NET_DIR/inputs.npy (codes [N, in_size]); writes outputs.npy (codes [N, outputs]) and
timing.json (cycle of every accepted input and output). FORMA_NET_STALL=1 adds random input gaps
and output back-pressure (seeded by FORMA_SEED).
"""
import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from .tb_util import start


@cocotb.test()
async def network_streams_rows(dut):
    """Every input row goes in back to back; every output code comes out, in order."""
    folder = Path(os.environ["FORMA_NET_DIR"])
    rows = np.load(folder / "inputs.npy")
    stall = os.environ.get("FORMA_NET_STALL") == "1"
    rng = np.random.default_rng(int(os.environ.get("FORMA_SEED", "1")))
    per_row = int(os.environ["FORMA_NET_OUTPUTS"])
    flat = [int(v) for v in rows.ravel()]
    want = len(rows) * per_row
    limit = int(os.environ["FORMA_NET_CYCLES"])

    await start(dut, ready=1)

    # All ready/valid outputs of the top come from registers: values read at a falling edge hold
    # until the next rising edge, where the handshakes decided here take place.
    sent, outputs, in_cycles, out_cycles, cycle = 0, [], [], [], 0
    i_ready, o_valid, o_payload = dut.i__ready, dut.o__valid, dut.o__payload
    i_valid, i_payload, o_ready = dut.i__valid, dut.i__payload, dut.o__ready
    while len(outputs) < want and cycle < limit:
        await FallingEdge(dut.clk)
        give = sent < len(flat) and (not stall or rng.random() < 0.7)
        take = not stall or rng.random() < 0.6
        if stall:
            o_ready.value = int(take)
        i_valid.value = int(give)
        if give:
            i_payload.value = flat[sent]
            if i_ready.value:
                in_cycles.append(cycle)
                sent += 1
        if take and o_valid.value:
            outputs.append(o_payload.value.to_unsigned())
            out_cycles.append(cycle)
        cycle += 1
    got = np.array(outputs, dtype=np.uint64)
    np.save(folder / "outputs.npy", got[:len(got) - len(got) % per_row].reshape(-1, per_row))
    (folder / "timing.json").write_text(json.dumps({"inputs": in_cycles, "outputs": out_cycles}))
    assert len(outputs) == want, f"only {len(outputs)} of {want} outputs after {cycle} cycles"
