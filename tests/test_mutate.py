"""`forma mutate`: Yosys mutants of a PE or an array against its regression on Verilator,
survivors proven equivalent by SAT; a seeded CI sample here, the full per-family runs under
`make bench` / `make mutate`."""
import subprocess
import sys

import numpy as np
import pytest
from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from forma.generators import elaborate, to_verilog
from forma.sim.cases import Case
from forma.sim.mutate import (PROOF_SECONDS, MutationError, miter_verilog, module_ports,
                              mutant_netlist, mutate, prove_equivalent)
from forma.sim.mutate_design import mutate_design
from forma.sim.tb_util import first_difference


def forma(*args):
    return subprocess.run([sys.executable, "-m", "forma.cli", *args], capture_output=True, text=True)


def report_lines(report):
    return [f"{o.mutation.number} {o.verdict}: {o.mutation.where}; {o.detail}"
            for o in report.outcomes]


@pytest.mark.sim
def test_float4_mul_mutants_are_all_killed_or_proven_equivalent(tmp_path, seed):
    print(f"mutant sample seed {seed}")
    case = Case.parse("mul", ["float4_e2m1fn"])
    report = mutate(case, tmp_path, mutants=20, seed=seed)
    print("\n".join(report_lines(report)))
    assert report.mode == "exhaustive" and report.vectors == 256
    assert len(report.outcomes) == 20 and not report.holes, report.summary
    assert report.count("killed") > 0
    # A killed mutant is distinguishable, so the equivalence proof must fail on it.
    for outcome in [o for o in report.outcomes if o.verdict == "killed"][:4]:
        assert not report.prove(outcome.mutation), outcome.mutation.command
    # The same run with a wrong expectation must stop at the unmutated netlist.
    original = case.reference
    case.reference = lambda operands: original(operands) ^ np.uint64(1)
    with pytest.raises(MutationError, match="unmutated netlist"):
        mutate(case, tmp_path, mutants=20, seed=seed)


@pytest.mark.sim
def test_posit6_add_mutants_are_all_killed_or_proven_equivalent(tmp_path, seed):
    print(f"mutant sample seed {seed}")
    report = mutate(Case.parse("add", ["posit(6,0)"]), tmp_path, mutants=20, seed=seed)
    print("\n".join(report_lines(report)))
    assert report.mode == "exhaustive" and report.vectors == 4096
    assert len(report.outcomes) == 20 and not report.holes, report.summary


@pytest.mark.sim
def test_a_weak_regression_leaves_unproven_survivors(tmp_path, seed):
    """Eight random vectors cannot kill every non-equivalent mutant; the CLI says so and fails."""
    print(f"mutant sample seed {seed}")
    report = mutate(Case.parse("mul", ["float4_e2m1fn"]), tmp_path, mutants=20, seed=seed,
                    exhaustive=False, vectors=8)
    print("\n".join(report_lines(report)))
    assert report.holes, report.summary


@pytest.mark.parametrize("words, message", [
    (["mul", "float4_e2m1fn", "--mutants", "0"], "--mutants 0"),
    (["mul", "float16", "--vectors", "0"], "--vectors 0"),
    (["fma", "float8_e4m3fn", "--vectors", "2000000"], "--vectors 2000000"),
    (["div", "float4_e2m1fn"], "unknown op 'div'"),
    (["mul", "float4_e2m1fn", "--proof-seconds", "1"], "--proof-seconds 1"),
    (["mul", "a=int8"], "unknown number format 'a=int8'"),
    (["simd", "modes=int8"], "unknown number format 'modes=int8'"),
    (["simd", "default"], "give --vectors 913316 or fewer"),
    (["mac", "a=int8", "w=int8", "stages=0"], "stages=0"),
])
def test_bad_requests_are_one_sentence(tmp_path, words, message):
    result = forma("mutate", *words, "--build", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.sim
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_array_mutants_are_killed_by_the_array_regression(tmp_path, seed, dataflow):
    """A small seeded sample of each dataflow; the full runs are test_design_mutation_score."""
    print(f"mutant sample and stimulus seed {seed}")
    report = mutate_design(f"array rows=2 cols=2 a=int4 w=int4 dataflow={dataflow}", tmp_path,
                           mutants=8, seed=seed, count=200)
    print("\n".join(report_lines(report)))
    assert len(report.outcomes) == 8 and not report.holes, report.summary


@pytest.mark.sim
def test_simd_pe_mutants_are_killed_or_proven_equivalent(tmp_path, seed):
    """The SIMD PE with two 4-bit modes: every lane exhaustive, modes interleaved per beat."""
    print(f"mutant sample seed {seed}")
    report = mutate(Case.parse("simd", ["int4", "float4_e2m1fn"]), tmp_path, mutants=6, seed=seed)
    print("\n".join(report_lines(report)))
    assert report.mode == "exhaustive" and report.vectors == 512
    assert len(report.outcomes) == 6 and not report.holes, report.summary


def test_handshake_traces_compare_cycle_by_cycle():
    same = [(1, 0, 1, 1), (0, 1, 1, 0)]
    assert first_difference(list(same), same) is None
    assert first_difference([(1, 0, 1, 1), (0, 1, 0, 0)], same) == 1
    assert first_difference(same[:1], same) == 1


@pytest.mark.sim
def test_integer_mac_mutants_are_killed_or_proven_equivalent(tmp_path, seed):
    """The integer MAC design's own cocotb regression (tb_mac) against a seeded sample."""
    print(f"mutant sample and stimulus seed {seed}")
    report = mutate_design("mac a=int4 w=uint3 acc=int7 stages=2", tmp_path, mutants=10,
                           seed=seed, count=600)
    print("\n".join(report_lines(report)))
    assert len(report.outcomes) == 10 and not report.holes, report.summary


def test_miter_compares_payloads_only_while_valid():
    ports = module_ports(to_verilog(elaborate("array rows=2 cols=2 a=int4 w=int4"), name="dut"))
    assert {p.name for p in ports} >= {"clk", "rst", "i__payload", "wl__ready", "o__payload"}
    miter = miter_verilog(ports, 3, 5)
    assert "(a_o__valid && a_o__payload != b_o__payload)" in miter
    assert "a_wl__ready != b_wl__ready" in miter and ".mutsel(3'd5)" in miter


class CountToFour(wiring.Component):
    """Counts 0..4 while `en`; `o` = count is 5 or 7, which no reachable state is."""
    en: In(1)
    o: Out(1)

    def elaborate(self, platform):
        m = Module()
        count = Signal(3)
        with m.If(self.en):
            m.d.sync += count.eq(Mux(count == 4, 0, count + 1))
        m.d.comb += self.o.eq(count[2] & count[0])
        return m


def test_a_mutant_differing_only_in_unreachable_states_is_proven_equivalent(tmp_path):
    """`o` tied to 0 is equivalent only because count never reaches 5 or 7; with `en` low an
    unreachable state could persist for any number of cycles, so no induction over matched
    registers proves it, while reachability does. `o` tied to 1 or inverted is told apart by a
    counterexample (False, not None: undecided)."""
    mutations, width, ports = mutant_netlist(CountToFour(), tmp_path, 100, 1)
    on_o = {m.mode: m for m in mutations if m.where.startswith(("const0 $and port Y",
                                                                "const1 $and port Y",
                                                                "inv $and port Y"))}
    assert set(on_o) == {"const0", "const1", "inv"}, [m.where for m in mutations]
    assert prove_equivalent(tmp_path, on_o["const0"], ports, width, 60) is True
    assert prove_equivalent(tmp_path, on_o["const1"], ports, width, 60) is False
    assert prove_equivalent(tmp_path, on_o["inv"], ports, width, 60) is False


def test_survivors_deep_in_the_simd_pe_are_proven_and_a_killed_mutant_is_told_apart(tmp_path):
    """Two mutants of the 5-mode SIMD PE (stages 3) in its posit(16,1) regime decoding: their
    effect is masked only pipeline stages later, through registers of both copies, which
    reachability alone did not settle in minutes on this netlist; signal correspondence proves
    both. A mutant the regression kills is told apart by a counterexample."""
    mutations, width, ports = mutant_netlist(Case.parse("simd", ["default"], stages=3).component(),
                                             tmp_path, 20, 1)
    killed, survivors = mutations[0], (mutations[2], mutations[7])
    assert killed.where.startswith("const1 $not port A bit 0"), killed.where
    assert [m.where.split(" (")[0] for m in survivors] == ["const0 $not port Y bit 0",
                                                          "cnot1 $xor port Y bit 6 ctrl bit 1"]
    for survivor in survivors:
        assert prove_equivalent(tmp_path, survivor, ports, width, 60) is True, survivor.where
    assert prove_equivalent(tmp_path, killed, ports, width, 60) is False


# Per family: (op, formats, options, mutants, least share of non-equivalent mutants killed).
# The <=8-bit single-cycle regressions are exhaustive, so every non-equivalent mutant must die;
# 16-bit ones are random + corners, pipelined ones keep the exhaustive stimulus.
FAMILIES = [
    ("mul", ["float4_e2m1fn"], {}, 100, 1.0),
    ("mul", ["float8_e4m3fn"], {}, 100, 1.0),
    ("add", ["float8_e4m3fn"], {}, 100, 1.0),
    ("mul", ["posit(8,0)"], {}, 100, 1.0),
    ("add", ["posit(8,0)"], {}, 100, 1.0),
    ("convert", ["float8_e5m2", "float8_e4m3fn"], {}, 100, 1.0),
    ("mac", ["float4_e2m1fn"], {}, 100, 1.0),
    ("mac", ["float8_e4m3fn"], {"out": "float16"}, 100, 1.0),
    ("mac", ["posit(8,0)"], {"carry_bits": 2}, 100, 1.0),   # a quire the streams overflow
    ("dot", ["mxfp4"], {"out": "bfloat16"}, 100, 1.0),
    ("mul", ["float8_e4m3fn"], {"stages": 3}, 100, 0.99),
    ("add", ["posit(8,0)"], {"stages": 2}, 100, 0.99),
    ("mul", ["float16"], {}, 50, 0.99),
    ("mul", ["bfloat16"], {}, 50, 0.99),
    ("mul", ["posit(16,1)"], {}, 50, 0.99),
    ("simd", ["int4", "float4_e2m1fn", "posit(8,0)", "int8"], {}, 100, 1.0),
    ("simd", ["default"], {"stages": 3, "vectors": 900_000}, 50, 0.99),
]


@pytest.mark.bench
@pytest.mark.sim
@pytest.mark.parametrize("op, formats, options, mutants, share", FAMILIES,
                         ids=[f"{op}-{'-'.join(f)}-{'-'.join(f'{k}={v}' for k, v in o.items())}".rstrip("-")
                              for op, f, o, _, _ in FAMILIES])
def test_family_mutation_score(op, formats, options, mutants, share, tmp_path, seed):
    print(f"mutant sample and stimulus seed {seed}")
    case = Case.parse(op, formats, out=options.get("out"), stages=options.get("stages", 1),
                      carry_bits=options.get("carry_bits"))
    report = mutate(case, tmp_path, mutants=mutants, seed=seed,
                    vectors=options.get("vectors", 1_000_000))
    print("\n".join(report_lines(report)))
    print(report.summary, report.seconds)
    distinguishable = len(report.outcomes) - report.count("equivalent")
    assert report.count("killed") >= share * distinguishable, report.summary


DESIGNS = ["array rows=2 cols=2 a=int4 w=int4",
           "array rows=2 cols=2 a=int4 w=int4 dataflow=os",
           "array rows=2 cols=2 a=float4_e2m1fn w=float4_e2m1fn out=float8_e4m3fn",
           "array rows=2 cols=2 a=mxfp4 w=mxfp4 out=float16",
           "mac a=int8 w=int8 stages=2",
           "mac a=int4 w=uint3 acc=int7"]
# Wall-clock seconds per proof where the default is tight: the MX array's miter has ~92k cells,
# and one proof takes about 75 s on a core of its own, far longer beside other jobs.
PROOF_SECONDS_OF = {"array rows=2 cols=2 a=mxfp4 w=mxfp4 out=float16": 600}


@pytest.mark.bench
@pytest.mark.sim
@pytest.mark.parametrize("spec", DESIGNS)
def test_design_mutation_score(spec, tmp_path, seed):
    print(f"mutant sample and stimulus seed {seed}")
    report = mutate_design(spec, tmp_path, mutants=100, seed=seed,
                           proof_seconds=PROOF_SECONDS_OF.get(spec, PROOF_SECONDS))
    print("\n".join(report_lines(report)))
    print(report.summary, report.seconds)
    distinguishable = len(report.outcomes) - report.count("equivalent")
    assert report.count("killed") >= 0.99 * distinguishable, report.summary
