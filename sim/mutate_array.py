"""Mutation testing of the systolic-array regression: Yosys mutants of an `array` design behind a
selector port, the per-cycle array testbench (sim/tb_array.py) run once per mutant in one build.

Survivors get the same SAT equivalence proof as PE mutants (forma.sim.mutate).
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..generators import elaborate, spec_of
from .mutate import (PROOF_SECONDS, MutationError, MutationReport, check_request, judge,
                     mutant_netlist, wrapper_verilog)
from .runner import cocotb_env, run_cocotb

DEFAULT_OUTPUTS = 600   # output elements per regression pass, as tests/test_array.py runs it


@dataclass
class ArrayTarget:
    """The design a mutation report is about, for its title."""
    spec: object

    @property
    def title(self):
        return self.spec.text


def mutate_array(words, build_dir, mutants=50, seed=1, outputs=DEFAULT_OUTPUTS,
                 log=sys.stderr, proof_seconds=PROOF_SECONDS) -> MutationReport:
    """Plant `mutants` seeded Yosys mutations in the array design `words` (an `array ...` spec)
    and run the array regression (seed `seed`, about `outputs` output elements: a full-rate
    matmul, then ragged random ones with corner values under stalls) against each;
    `proof_seconds` limits each equivalence proof script."""
    check_request(mutants, proof_seconds)
    spec = spec_of(words)
    build = Path(build_dir).resolve()
    work = build / "netlist"
    seconds, start = {}, time.perf_counter()
    mutations, width, ports = mutant_netlist(elaborate(spec), work, mutants, seed)
    seconds["mutate"] = time.perf_counter() - start
    report = MutationReport(ArrayTarget(spec), "random", seed, outputs, work, ports, width,
                            proof_seconds=proof_seconds)
    print(f"[mutate] {spec.text}: {len(mutations)} mutants, about {outputs} outputs per pass "
          f"(seed {seed}); building on Verilator", file=log, flush=True)
    start = time.perf_counter()
    results = build / "mutation_results.json"
    results.unlink(missing_ok=True)
    top = wrapper_verilog(ports, width) + (work / "mutants.v").read_text()
    run = run_cocotb(top, "forma.sim.tb_array", build / "sim",
                     {**cocotb_env(spec, seed, outputs), "FORMA_MUTANTS": len(mutations),
                      "FORMA_MUTATION_RESULTS": results})
    if not results.exists():
        raise MutationError(f"the array testbench did not start; see {run['log']}")
    runs = json.loads(results.read_text())
    if runs[0]["killed"]:
        raise MutationError(f"the unmutated netlist of {spec.text} fails its regression: "
                            f"{runs[0]['killed']}")
    if len(runs) != len(mutations) + 1:
        raise MutationError(f"the array testbench stopped after {len(runs) - 1} of "
                            f"{len(mutations)} mutants; log: {run['log']}")
    seconds["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    judge(report, mutations, [{"hung": False, "mismatches": bool(r["killed"]), **r}
                              for r in runs[1:]], lambda run: run["killed"], log)
    seconds["prove"] = time.perf_counter() - start
    report.seconds = seconds
    return report
