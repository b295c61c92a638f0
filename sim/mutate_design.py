"""Mutation testing of a design's own cocotb regression: Yosys mutants of an `array` or integer
`mac` design behind a selector port, its testbench (sim/tb_array.py, sim/tb_mx_array.py,
sim/tb_mac.py) run once per mutant in one Verilator build, each run from a reset.

Survivors get the same equivalence proof as PE mutants (forma.sim.mutate).
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from ..generators import elaborate, spec_of
from ..generators.designs import cocotb_module_for
from .mutate import (PROOF_SECONDS, MutationError, MutationReport, check_request, judge,
                     mutant_netlist, wrapper_verilog)
from .runner import cocotb_env, mutation_env, run_cocotb

# Per design kind: the size of one regression pass (output elements of an array, as
# tests/test_array.py runs it; streamed inputs of a MAC, as tests/test_mac.py).
PASS_SIZES = {"array": (600, "outputs"), "mac": (3000, "inputs")}


@dataclass
class DesignTarget:
    """The design a mutation report is about, for its title."""
    spec: object

    @property
    def title(self):
        return self.spec.text


def regression_size(kind):
    """(default count, unit) of one regression pass of design `kind`."""
    return PASS_SIZES[kind]


def mutate_design(words, build_dir, mutants=50, seed=1, count=None, log=sys.stderr,
                  proof_seconds=PROOF_SECONDS) -> MutationReport:
    """Plant `mutants` seeded Yosys mutations in the design `words` (an `array ...` or `mac ...`
    spec) and run its regression (seed `seed`, `count` outputs or inputs per pass, default
    `regression_size`) against each; `proof_seconds` limits each equivalence proof script."""
    check_request(mutants, proof_seconds)
    spec = spec_of(words)
    if spec.kind not in PASS_SIZES:
        raise SpecError(f"{spec.kind}: design mutation runs take {' or '.join(PASS_SIZES)} "
                        f"designs; PEs go by their verify op (forma mutate mul float8_e4m3fn, "
                        f"forma mutate simd default)")
    default, unit = PASS_SIZES[spec.kind]
    count = default if count is None else count
    build = Path(build_dir).resolve()
    work = build / "netlist"
    seconds, start = {}, time.perf_counter()
    mutations, width, ports = mutant_netlist(elaborate(spec), work, mutants, seed)
    seconds["mutate"] = time.perf_counter() - start
    report = MutationReport(DesignTarget(spec), "random", seed, count, work, ports, width,
                            proof_seconds=proof_seconds)
    print(f"[mutate] {spec.text}: {len(mutations)} mutants, about {count} {unit} per pass "
          f"(seed {seed}); building on Verilator", file=log, flush=True)
    start = time.perf_counter()
    results = build / "mutation_results.json"
    results.unlink(missing_ok=True)
    top = wrapper_verilog(ports, width) + (work / "mutants.v").read_text()
    run = run_cocotb(top, cocotb_module_for(spec), build / "sim",
                     {**cocotb_env(spec, seed, count), **mutation_env(len(mutations), results)})
    if not results.exists():
        raise MutationError(f"the {spec.kind} testbench did not start; see {run['log']}")
    runs = json.loads(results.read_text())
    if runs[0]["killed"]:
        raise MutationError(f"the unmutated netlist of {spec.text} fails its regression: "
                            f"{runs[0]['killed']}")
    if len(runs) != len(mutations) + 1:
        raise MutationError(f"the {spec.kind} testbench stopped after {len(runs) - 1} of "
                            f"{len(mutations)} mutants; log: {run['log']}")
    seconds["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    judge(report, mutations, [{"hung": False, "mismatches": bool(r["killed"]), **r}
                              for r in runs[1:]], lambda run: run["killed"], log)
    seconds["prove"] = time.perf_counter() - start
    report.seconds = seconds
    return report
