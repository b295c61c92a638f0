"""Systolic arrays: the tiled matmul reference, parameter checks, and cocotb runs on Verilator.

Each simulated spec runs a full-rate tiled matmul (throughput measured, >= 95% of rows x cols
MACs/cycle required) and random ragged matmuls with corner values under valid gaps, weight-load
gaps and output back-pressure, all compared bit-exactly with the reference: integers wrapped to
the accumulator, minifloat/posit arrays as exact column words or rounded once per element.
"""
import json

import numpy as np
import pytest

from forma.errors import SpecError
from forma.generators import elaborate, to_verilog
from forma.sim import matmul
from forma.sim.bench_array import largest_square
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
    # Exact arrays: NaN/inf/-0 corners, ragged tiles, reloads and stalls as above.
    "array rows=2 cols=3 a=float8_e4m3fn w=float8_e5m2 out=float16",          # FP8 mixed, ws
    "array rows=3 cols=2 a=float4_e2m1fn w=float8_e4m3fn out=float8_e4m3fn dataflow=os",
    "array rows=2 cols=2 a=posit(8,0) w=posit(8,0) out=posit(8,0)",           # posit, ws
    "array rows=2 cols=3 a=posit(8,0) w=posit(8,0) dataflow=os",              # exact words, os
    "array rows=2 cols=2 a=posit(8,0) w=posit(8,0)",                          # exact words, ws
    "array rows=2 cols=2 a=float8_e4m3fnuz w=float8_e4m3fnuz",                # no -0, ws
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
                                  "array rows=8 cols=8 a=int8 w=int4 dataflow=os",
                                  "array rows=8 cols=8 a=float8_e4m3fn w=float8_e4m3fn "
                                  "out=float8_e4m3fn dataflow=os",
                                  "array rows=8 cols=8 a=posit(8,0) w=posit(8,0) out=posit(8,0)"])
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
    ("array a=float8_e4m3fn", "w=int8: exact arrays take minifloat or posit"),
    ("array a=mxfp8_e4m3 w=int8", "w=int8: an MX array"),
    ("array a=float8_e8m0fnu w=float8_e4m3fn", "a=float8_e8m0fnu: an array operand needs a zero"),
    ("array a=float8_e4m3fn w=float8_e4m3fn acc=int20", "acc=int20: 1024 exact products .* "
     "need a 47-bit accumulator"),
    ("array a=posit(8,0) w=posit(8,0) acc=fixed<40,8>", "acc=fixed<40,8>: an exact array"),
    ("array a=float32 w=float32", "length=1024: the exact accumulator .* 565 bits"),
    ("array a=float8_e4m3fn w=float8_e4m3fn out=int8", "out=int8: exact arrays take"),
    ("array a=int8 w=int8 out=float16", "out=float16: integer arrays"),
    ("array a=float8_e4m3fn w=float8_e4m3fn packing=2", "packing=2: minifloat/posit arrays"),
    ("array a=posit(8,0) w=posit(8,0) length=0", "length=0"),
    ("array a=int17", "1..16"),
    ("array rows=x", "rows=x: expected an integer"),
])
def test_bad_parameters_name_the_parameter(spec, words):
    with pytest.raises(SpecError, match=words):
        elaborate(spec)


EXACT_PAIRS = [("float8_e4m3fn", "float8_e5m2", "float16"),
               ("float4_e2m1fn", "float8_e4m3fn", "float8_e4m3fn"),
               ("posit(8,0)", "posit(8,0)", "posit(8,0)"),
               ("float8_e4m3fn", "float8_e4m3fn", "bfloat16")]


def random_codes(rng, fmt, shape):
    """Uniform codes, with 60% of entries a signed zero (so all -0 sums and cancellations occur)."""
    codes = rng.integers(0, 1 << fmt.bits, shape)
    zeros = (1 << (fmt.bits - 1)) * rng.integers(0, 2, shape) if fmt.family == "float" else 0
    return np.where(rng.random(shape) < 0.6, zeros, codes)


@pytest.mark.parametrize("a_name, w_name, out_name", EXACT_PAIRS)
def test_exact_tiled_equals_dot(a_name, w_name, out_name, seed):
    """Tiled column words, rounded once, equal `formats.dot(..., "exact")` element by element."""
    rng = np.random.default_rng(seed)
    checked = 0
    for trial in range(24):
        rows, cols = (int(x) for x in rng.integers(1, 5, 2))
        array = elaborate(f"array rows={rows} cols={cols} a={a_name} w={w_name} out={out_name}")
        sums = matmul.sums_for(array)
        m, k, n = (int(x) for x in rng.integers(1, 10, 3))
        a = random_codes(rng, array.a_format, (m, k)) if trial % 2 else \
            rng.integers(0, 1 << array.a_format.bits, (m, k))
        b = random_codes(rng, array.w_format, (k, n)) if trial % 2 else \
            rng.integers(0, 1 << array.w_format.bits, (k, n))
        if not getattr(array.out_format, "has_nan", True):   # FP4/FP6 outputs: no NaN sums
            a = np.where(np.isnan(array.a_format.decode(a)), 0, a)
            b = np.where(np.isnan(array.w_format.decode(b)), 0, b)
        want = matmul.exact_reference(a, b, sums)
        for dataflow in ("ws", "os"):
            got = sums.round(matmul.tiled_matmul(a, b, rows, cols, sums, dataflow))
            bad = np.argwhere(np.asarray(got) != want)
            assert not len(bad), (f"seed {seed}: C{tuple(bad[0])} of {m}x{k} @ {k}x{n} on "
                                  f"{rows}x{cols} {dataflow}: got {got[tuple(bad[0])]}, "
                                  f"expected {want[tuple(bad[0])]}")
            checked += m * n
    assert checked > 0


def test_exact_accumulator_sizes():
    e4m3 = elaborate("array a=float8_e4m3fn w=float8_e4m3fn")
    # 448 = 229376 units of 2**-9; 1024 products of 448**2 need 46 magnitude bits and a sign.
    assert (e4m3.lanes.arith.acc_bits, e4m3.lanes.arith.lsb) == (47, -18)
    posit = elaborate("array a=posit(8,0) w=posit(8,0) length=16")
    # maxpos**2 = 2**12 in units of minpos**2 = 2**-12: 16 * 2**24 needs 29 bits and a sign.
    assert (posit.lanes.arith.acc_bits, posit.lanes.arith.lsb) == (30, -12)


def test_verilog_is_deterministic():
    for spec in ("array rows=3 cols=4 a=int8 w=int4", "array rows=2 cols=2 dataflow=os",
                 "array rows=1 cols=2 a=posit(8,0) w=float8_e4m3fn"):
        assert to_verilog(elaborate(spec)) == to_verilog(elaborate(spec))


def test_ecp5_multiplier_uses_its_own_registers():
    """On ECP5 the operand and product registers are the MULT18X18D's, clock-enabled like the
    fabric pipeline it replaces; other platforms (and simulation) get that pipeline in logic."""
    from types import SimpleNamespace

    from amaranth import Module, Signal, signed

    from forma.hdl.hard_multiplier import registered_product
    for platform, dsps in ((SimpleNamespace(family="ecp5"), 1), (None, 0)):
        m = Module()
        advance = Signal()
        registered_product(m, advance, Signal(signed(8)), Signal(signed(9)), "p", platform)
        found = [m.submodules["p_dsp"]] if "p_dsp" in m._named_submodules else []
        assert len(found) == dsps
        for dsp in found:
            assert dsp.type == "MULT18X18D"
            assert {dsp.parameters[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")} \
                == {"CLK0"}
            assert dsp.ports["CE0"][0] is advance


def test_largest_square_search_builds_each_side_once():
    """The bench's search walks up from the start while builds fit and reuses rows it was given."""
    built = []

    def build(side):
        built.append(side)
        return {"rows": side, "fits": side <= 5}
    known = {2: {"rows": 2, "fits": True}, 4: {"rows": 4, "fits": True}}
    assert largest_square(4, build, known)[0] == 5 and built == [5, 6]
    built.clear()
    assert largest_square(8, build)[0] == 5 and built == [8, 7, 6, 5]
    built.clear()
    assert largest_square(1, lambda side: {"rows": side, "fits": False})[0] is None


def test_psum_edge_sums_set_each_bit_alone_and_every_run_of_low_ones():
    """The C0 sums of the ws regression that a zero test or leading-one search sees bit by bit."""
    from forma.sim.tb_array import edge_sums
    assert edge_sums(4).tolist() == [-8, -7, -4, -3, -2, -1, 1, 2, 3, 4, 7]


@pytest.mark.parametrize("a_name, w_name", [("posit(8,0)", "posit(8,0)"),
                                            ("float8_e4m3fnuz", "float8_e4m3fnuz"),
                                            ("float8_e4m3fn", "float4_e2m1fn"),
                                            ("float8_e4m3fnuz", "posit(16,1)")])
def test_the_tilers_padding_product_is_the_empty_word(a_name, w_name):
    """A padded reduction position adds nothing, not even `plus`: formats without -0 pad with
    0 times -1 (ws reductions shorter than the rows failed on posit and fnuz words before)."""
    from forma.hdl.exact_product import pad_codes
    a_fmt, w_fmt = parse_format(a_name), parse_format(w_name)
    pad_a, pad_w = pad_codes(a_fmt, w_fmt)
    sums = matmul.ExactSums(a_fmt, w_fmt, 64, -64)
    assert sums.matmul([[pad_a]], [[pad_w]])[0, 0] == 0
