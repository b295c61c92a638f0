"""Systolic arrays: the tiled matmul reference, parameter checks, and cocotb runs on Verilator.

Each simulated spec runs a full-rate tiled matmul (throughput measured, >= 95% of rows x cols
MACs/cycle required) and random ragged matmuls with corner values under valid gaps, weight-load
gaps and output back-pressure, all compared bit-exactly with the reference.
"""
import json

import numpy as np
import pytest

from forma.errors import SpecError
from forma.generators import elaborate, to_verilog
from forma.sim import matmul
from forma.sim.formats import parse_format
from forma.sim.runner import cocotb_env, run_cocotb

REGRESSION = [
    "array rows=4 cols=4 a=int8 w=int8",                         # W8A8, ws
    "array rows=4 cols=4 a=int8 w=int8 dataflow=os",             # W8A8, os
    "array rows=4 cols=4 a=int8 w=int4",                         # W4A8, ws, 2 per multiplier
    "array rows=4 cols=4 a=int8 w=int4 dataflow=os",             # W4A8, os, 2 per multiplier
    "array rows=3 cols=4 a=uint8 w=int2 acc=int12 dataflow=os",  # W2A8, wrapping accumulator
    "array rows=4 cols=2 a=int8 w=int2_narrow",                  # ternary weights, packed
    "array rows=2 cols=3 a=int16 w=int16",                       # 16-bit, odd shape
]


def run_array(spec, seed, vectors, build):
    stats = build / "stats.json"
    result = run_cocotb(to_verilog(elaborate(spec)), "forma.sim.tb_array", build,
                        {**cocotb_env(spec, seed, vectors), "FORMA_ARRAY_STATS": stats})
    assert result["tests"] == 1 and result["failed"] == 0, (
        f"{spec}: see {result['log']}; reproduce: forma sim {spec} --seed {seed} "
        f"--vectors {vectors}")
    return json.loads(stats.read_text())


@pytest.mark.sim
@pytest.mark.parametrize("spec", REGRESSION)
def test_array_matches_reference(spec, seed, tmp_path_factory):
    stats = run_array(spec, seed, 600, tmp_path_factory.mktemp("array"))
    assert stats["macs_per_cycle"] >= 0.95 * stats["ideal"], stats


@pytest.mark.sim
@pytest.mark.bench
@pytest.mark.parametrize("spec", ["array rows=8 cols=8 a=int8 w=int8",
                                  "array rows=8 cols=8 a=int8 w=int4 dataflow=os"])
def test_large_array_throughput(spec, seed, tmp_path_factory):
    stats = run_array(spec, seed, 4000, tmp_path_factory.mktemp("array"))
    assert stats["macs_per_cycle"] >= 0.95 * stats["ideal"], stats


def test_reference_equals_plain_loops(seed):
    rng = np.random.default_rng(seed)
    acc = parse_format("int10")
    a = rng.integers(-128, 127, (5, 7), endpoint=True)
    b = rng.integers(-8, 7, (7, 3), endpoint=True)
    got = matmul.matmul_reference(a, b, acc)
    for i in range(5):
        for j in range(3):
            total = sum(int(a[i, k]) * int(b[k, j]) for k in range(7))
            assert got[i, j] == (total + 512) % 1024 - 512, f"seed {seed}: C[{i},{j}]"


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("acc", ["int32", "int13"])
def test_tiled_equals_direct(dataflow, acc, seed):
    rng = np.random.default_rng(seed)
    acc = parse_format(acc)
    for _ in range(20):
        m, k, n = (int(x) for x in rng.integers(1, 20, 3))
        rows, cols = (int(x) for x in rng.integers(1, 6, 2))
        a = rng.integers(-128, 127, (m, k), endpoint=True)
        b = rng.integers(-128, 127, (k, n), endpoint=True)
        tiled = matmul.tiled_matmul(a, b, rows, cols, acc, dataflow)
        assert (tiled == matmul.matmul_reference(a, b, acc)).all(), (
            f"seed {seed}: {m}x{k} @ {k}x{n} on {rows}x{cols} {dataflow}")


@pytest.mark.parametrize("spec, acc, factor, multipliers", [
    ("array rows=4 cols=4 a=int8 w=int8", "int26", 1, 16),
    ("array rows=4 cols=4 a=int8 w=int4", "int22", 2, 8),
    ("array rows=4 cols=4 a=int8 w=int4 packing=off", "int22", 1, 16),
    ("array rows=8 cols=8 a=int2 w=int2 length=16 dataflow=os", "int8", 4, 16),
    ("array rows=2 cols=2 a=uint8 w=uint8 length=1 dataflow=os", "uint16", 1, 4),
])
def test_accumulator_and_packing_defaults(spec, acc, factor, multipliers):
    array = elaborate(spec)
    got = (array.acc_format.name, array.plan.factor, array.multipliers)
    assert got == (acc, factor, multipliers)


@pytest.mark.parametrize("spec, words", [
    ("array rows=0 cols=4", "rows=0: the array side"),
    ("array rows=4 cols=-1", "cols=-1"),
    ("array rows=4 cols=65", "cols=65"),
    ("array dataflow=rs", "dataflow=rs"),
    ("array a=int8 w=int8 acc=int12", "acc=int12 is narrower than the product"),
    ("array a=int8 w=int8 packing=2", "packing=2: 2 products int8 x int8"),
    ("array a=int8 w=int4 cols=3 packing=2", "must divide the 3 columns"),
    ("array rows=8 length=4", "length=4: one ws pass sums rows=8"),
    ("array a=float8_e4m3fn", "integer formats"),
    ("array a=int17", "1..16"),
    ("array rows=x", "rows=x: expected an integer"),
])
def test_bad_parameters_name_the_parameter(spec, words):
    with pytest.raises(SpecError, match=words):
        elaborate(spec)


def test_verilog_is_deterministic():
    for spec in ("array rows=3 cols=4 a=int8 w=int4", "array rows=2 cols=2 dataflow=os"):
        assert to_verilog(elaborate(spec)) == to_verilog(elaborate(spec))
