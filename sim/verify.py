"""`forma verify`: build a PE, stream vectors through it on Verilator, compare with the reference.

Returns counts, the first mismatches in format notation and the command that reproduces the run.
"""
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError
from .bulk import run_bulk
from .cases import EXHAUSTIVE_LIMIT, Case


@dataclass
class Verdict:
    case: Case
    mode: str            # "exhaustive" or "random"
    seed: int
    vectors: int
    mismatches: int
    first: list = field(default_factory=list)   # described mismatches
    rate: float = 0.0    # vectors/s through the simulator
    seconds: dict = field(default_factory=dict)
    waves: str | None = None

    @property
    def summary(self):
        seeded = self.mode == "random" or self.case.exhaustive_seeded
        how = self.mode + (f", seed {self.seed}" if seeded else "")
        return f"{self.vectors} vectors, {self.mismatches} mismatches ({how})"


def stimulus(case: Case, exhaustive, vectors, seed):
    """The regression's vectors and the reference's results: (operands, packed payloads,
    expected results, payload width)."""
    operands = case.exhaustive(seed) if exhaustive else case.random(vectors, seed)
    expected = np.asarray(case.reference(operands), dtype=np.uint64)
    packed, width = case.pack(operands)
    return operands, packed, expected, width


def verify(case: Case, build_dir, exhaustive=None, vectors=1_000_000, seed=1, lanes=None,
           stall=False, log=None) -> Verdict:
    """Check `case`'s PE against the reference. exhaustive=None: exhaustive when the whole input
    space has at most 2**16 vectors, else `vectors` seeded random ones (corner classes first).
    lanes=None: the case's default number of PE copies."""
    if exhaustive is None:
        exhaustive = case.space <= 1 << 16
    if exhaustive and case.space > EXHAUSTIVE_LIMIT:
        raise SpecError(f"{case.title} has {case.space} input vectors; exhaustive runs stop at "
                        f"{EXHAUSTIVE_LIMIT}: use --vectors N for a seeded random run")
    if not exhaustive and vectors < 1:
        raise SpecError(f"--vectors {vectors}: give a positive vector count")
    lanes = lanes or case.default_lanes
    log = log or sys.stderr       # looked up per call: the stream may be replaced after import
    seconds, start = {}, time.perf_counter()
    component = case.component()
    operands, packed, expected, width = stimulus(case, exhaustive, vectors, seed)
    seconds["reference"] = time.perf_counter() - start
    plan = f" [{case.plan(operands)}]" if hasattr(case, "plan") else ""
    print(f"[verify] {case.title}: {len(packed)} vectors{plan}, {lanes} lanes, latency "
          f"{component.latency}; building on Verilator", file=log, flush=True)
    start = time.perf_counter()
    result = run_bulk(component, packed, expected, width, case.out.bits, build_dir,
                      lanes=lanes, stall=stall, streams=case.streams(operands))
    seconds["simulate"] = time.perf_counter() - start
    seconds["sim_only"] = result.sim_seconds
    first = [case.describe(operands, index, got, int(expected[index]))
             for index, got in result.first]
    return Verdict(case, "exhaustive" if exhaustive else "random", seed, result.vectors,
                   result.mismatches, first, result.rate, seconds, result.waves)
