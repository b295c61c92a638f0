"""cocotb testbench: the integer MAC's Verilog against the bit-exact reference, on Verilator.

Seeded random streams with random valid gaps and output back-pressure, clears mid-stream, and
runs of extreme operands (max*max, min*min, max*min) that stress the accumulator's range.
"""
import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from ..generators import parameters_of
from .mac import mac_reference
from .runner import cocotb_config, mutation_config
from .tb_util import junk, mutation_runs, reset


def stimulus(mac, rng, count):
    """(a, w, clear) raw integer arrays: random values, then corner runs and forced clears."""
    af, wf = mac.a_format, mac.w_format
    a = rng.integers(af.raw_min, af.raw_max, count, endpoint=True)
    w = rng.integers(wf.raw_min, wf.raw_max, count, endpoint=True)
    clear = rng.random(count) < 0.03
    corners = [(af.raw_max, wf.raw_max), (af.raw_min, wf.raw_min),
               (af.raw_max, wf.raw_min), (af.raw_min, wf.raw_max)]
    run = max(1, min(count // 8, 64))
    for index, (ca, cw) in enumerate(corners):
        start = (index + 1) * count // 5
        a[start:start + run], w[start:start + run] = ca, cw
        clear[start] = True
    clear[count // 2] = True
    return a, w, clear


def pack_input(mac, a, w, clear):
    """The input payload bits: a in the low bits, then w, then clear (StructLayout order)."""
    ab, wb = mac.a_format.bits, mac.w_format.bits
    return (int(a) % (1 << ab)) | ((int(w) % (1 << wb)) << ab) | (int(clear) << (ab + wb))


def describe(mac, index, a, w, clear, got, expected):
    return (f"input #{index}: a={a} ({mac.a_format.name}) w={w} ({mac.w_format.name}) "
            f"clear={int(clear)} -> got acc={got}, expected {expected} ({mac.acc_format.name})")


async def regression(dut, mac, seed, count):
    """Every streamed accumulator value equals the reference, under stalls and back-pressure;
    asserts, then returns (cycles, stalled cycles)."""
    rng = np.random.default_rng(seed)
    a, w, clear = stimulus(mac, rng, count)
    sent, outputs, stalls, cycles, refused_at_full_rate = 0, [], 0, 0, 0
    limit = 20 * count + 100
    # Phases: the first quarter at full rate, then random valid gaps and back-pressure.
    while len(outputs) < count and cycles < limit:
        await FallingEdge(dut.clk)
        full_rate = sent < count // 4
        valid = sent < count and (full_rate or rng.random() < 0.8)
        ready = full_rate or rng.random() < 0.7
        dut.i__valid.value = int(valid)
        dut.i__payload.value = (pack_input(mac, a[sent], w[sent], clear[sent]) if valid
                                else junk(rng, dut.i__payload))
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if valid and dut.i__ready.value:
            sent += 1
        elif valid and full_rate:
            refused_at_full_rate += 1
        if dut.o__valid.value:
            if ready:
                value = dut.o__payload.value
                outputs.append(value.to_signed() if mac.acc_format.signed else value.to_unsigned())
            else:
                stalls += 1
        cycles += 1

    expected = mac_reference(a, w, clear, mac.acc_format)
    assert len(outputs) == count, f"only {len(outputs)} of {count} results after {cycles} cycles"
    for index, (got, want) in enumerate(zip(outputs, expected)):
        assert got == want, describe(mac, index, a[index], w[index], clear[index], got, want)
    assert stalls > 0, "back-pressure was never exercised"
    assert refused_at_full_rate == 0, f"input refused {refused_at_full_rate} times with the output ready"
    return cycles, stalls


@cocotb.test()
async def mac_matches_reference(dut):
    """The regression (under `runner.mutation_env`: once per mutant of a mutant netlist, see
    forma.sim.mutate_design)."""
    spec, seed, count = cocotb_config()
    mac = parameters_of(spec)
    dut._log.info(f"{spec}: {count} vectors, seed {seed}")
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    mutants = mutation_config()
    if mutants:
        await mutation_runs(dut, ("i",), lambda: regression(dut, mac, seed, count), *mutants)
        return
    await reset(dut)
    cycles, stalls = await regression(dut, mac, seed, count)
    dut._log.info(f"{count} vectors, 0 mismatches ({cycles} cycles, {stalls} stalled)")
