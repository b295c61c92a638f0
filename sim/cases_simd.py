"""`forma verify simd MODE...`: the run-time switchable SIMD multiplier (hdl/simd_pe.py) as a
verification case. A vector is one beat: two 16-bit operand words and the mode index.

Every lane of every mode with lanes of at most 8 bits sees every (a, b) pair of valid codes
exactly once (lane 0 in order, the others in seeded orders); a 16-bit mode gets every pair of
corner codes plus seeded random pairs; each unused mode value gets UNUSED_MODE_BEATS random words
(its result must be 0). All beats are shuffled together (seeded), so the mode changes at random
from beat to beat. Per lane the reference is `fmt.mul` for floats and posits and the exact
product (a code of the 2w-bit integer format) for integers.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import SpecError
from ..hdl.float_pe import check_stages
from ..hdl.simd_pe import DEFAULT_MODES, WORD, SIMDMultiplier, mode_bits, simd_modes
from .cases import corner_codes, random_codes
from .formats import dot, parse_format

UNUSED_MODE_BEATS = 1000


@dataclass(frozen=True)
class ResultWord:
    """The PE's output payload: the 32-bit result word, then the beat's mode."""
    bits: int
    name: str = "result word"


def lane_codes(words, fmt, lane):
    """Lane `lane`'s codes of `fmt` in 16-bit operand words."""
    mask = np.uint64((1 << fmt.bits) - 1)
    return ((words >> np.uint64(fmt.bits * lane)) & mask).astype(np.uint64)


def lane_results(fmt, a, b):
    """Per lane: (result codes, their width): fmt.mul for floats and posits, the exact product
    as a code of the 2w-bit integer format for integers."""
    if fmt.family == "int":
        wide = parse_format(f"{'int' if fmt.signed else 'uint'}{2 * fmt.bits}")
        return dot(a[:, None], b[:, None], fmt, fmt, wide).astype(np.uint64), 2 * fmt.bits
    return fmt.mul(a.astype(fmt.code_dtype), b.astype(fmt.code_dtype)).astype(np.uint64), fmt.bits


def exhaustive_words(fmt, rng):
    """Operand words in which every lane sees every (a, b) pair of valid codes exactly once."""
    codes = fmt.all_codes().astype(np.uint64)
    pa, pb = (g.ravel() for g in np.meshgrid(codes, codes, indexing="ij"))
    a, b = np.zeros(len(pa), np.uint64), np.zeros(len(pa), np.uint64)
    for lane in range(WORD // fmt.bits):
        order = np.arange(len(pa)) if lane == 0 else rng.permutation(len(pa))
        a |= pa[order] << np.uint64(fmt.bits * lane)
        b |= pb[order] << np.uint64(fmt.bits * lane)
    return a, b


def random_words(fmt, count, rng):
    """Every pair of corner codes, then `count` seeded random pairs of valid codes (drawn as
    forma.sim.cases.random_codes draws them, where rounding is hard)."""
    corners = corner_codes(fmt).astype(np.uint64)
    ca, cb = (g.ravel() for g in np.meshgrid(corners, corners, indexing="ij"))
    return (np.concatenate([ca, random_codes(fmt, count, rng)]),
            np.concatenate([cb, random_codes(fmt, count, rng)]))


class SimdCase:
    """`simd MODE...` (or `simd default`): the SIMD multiplier with these lane formats, mode index
    = position in the list. Operands are (a, b, mode) arrays, one entry per beat."""

    op = "simd"
    exhaustive_seeded = True    # lane orders and the beat order come from the seed
    default_lanes = 2

    def __init__(self, modes, stages):
        self.modes = simd_modes(modes)
        self.stages = check_stages(stages, SIMDMultiplier.CUTS)
        self.mode_bits = mode_bits(self.modes)
        self.out = ResultWord(2 * WORD + self.mode_bits)

    @classmethod
    def parse(cls, names, out=None, stages=1):
        if out:
            raise SpecError(f"--out {out}: the SIMD PE's result formats follow its modes; "
                            f"leave --out out")
        return cls(DEFAULT_MODES if list(names) == ["default"] else list(names), stages)

    @property
    def title(self):
        return "simd " + " ".join(fmt.name for fmt in self.modes)

    @property
    def space(self):
        """Operand pairs of the widest mode (exhaustive runs need every mode's lanes ≤ 8 bits)."""
        return max(1 << (2 * fmt.bits) for fmt in self.modes)

    def component(self):
        return SIMDMultiplier(self.modes, stages=self.stages)

    def exhaustive(self, seed=1):
        return self.random(0, seed)

    def random(self, count, seed):
        """Every beat of the module docstring with `count` random pairs per 16-bit mode."""
        rng = np.random.default_rng(seed)
        parts = []
        for index, fmt in enumerate(self.modes):
            if 2 * fmt.bits <= WORD:
                a, b = exhaustive_words(fmt, rng)
            else:
                a, b = random_words(fmt, count, rng)
            parts.append((a, b, np.full(len(a), index, np.uint64)))
        for unused in range(len(self.modes), 1 << self.mode_bits):
            a, b = rng.integers(0, 1 << WORD, size=(2, UNUSED_MODE_BEATS), dtype=np.uint64)
            parts.append((a, b, np.full(len(a), unused, np.uint64)))
        a, b, mode = (np.concatenate(column) for column in zip(*parts))
        order = rng.permutation(len(a))
        return [a[order], b[order], mode[order]]

    def plan(self, operands):
        """`float4_e2m1fn: 256 beats (exhaustive per lane); ...` for a run's log."""
        mode = operands[2]
        words = []
        for index in range(1 << self.mode_bits):
            beats = int((mode == index).sum())
            if index >= len(self.modes):
                words.append(f"mode {index} (unused): {beats} beats (random)")
                continue
            fmt = self.modes[index]
            how = "exhaustive per lane" if 2 * fmt.bits <= WORD else "corners + random"
            words.append(f"{fmt.name}: {beats} beats ({how})")
        return "; ".join(words)

    def results(self, a, b, mode):
        """The 32-bit result words (0 for an unused mode value)."""
        result = np.zeros(len(a), dtype=np.uint64)
        for index, fmt in enumerate(self.modes):
            chosen = mode == index
            if not chosen.any():
                continue
            words = np.zeros(int(chosen.sum()), dtype=np.uint64)
            for lane in range(WORD // fmt.bits):
                codes, width = lane_results(fmt, lane_codes(a[chosen], fmt, lane),
                                            lane_codes(b[chosen], fmt, lane))
                words |= codes << np.uint64(width * lane)
            result[chosen] = words
        return result

    def reference(self, operands):
        a, b, mode = operands
        return self.results(a, b, mode) | (mode << np.uint64(2 * WORD))

    def pack(self, operands):
        a, b, mode = operands
        return a | (b << np.uint64(WORD)) | (mode << np.uint64(2 * WORD)), 2 * WORD + self.mode_bits

    def streams(self, operands):
        return None

    def describe(self, operands, index, got, expected):
        """A mismatching beat lane by lane in the lanes' own notation."""
        a, b, mode = (int(column[index]) for column in operands)
        got_mode, got = got >> (2 * WORD), got & ((1 << 2 * WORD) - 1)
        want = expected & ((1 << 2 * WORD) - 1)
        if got_mode != mode:
            return f"beat of mode {mode} came out with mode {got_mode}"
        if mode >= len(self.modes):
            return f"mode {mode} (unused) → got result 0x{got:08x}, expected 0"
        fmt = self.modes[mode]
        width = 2 * fmt.bits if fmt.family == "int" else fmt.bits
        lines = [f"mode {mode} ({fmt.name}), a=0x{a:04x} b=0x{b:04x}:"]
        for lane in range(WORD // fmt.bits):
            x, y = (np.array([(v >> (fmt.bits * lane)) & ((1 << fmt.bits) - 1)], np.uint64)
                    for v in (a, b))
            mine = (got >> (width * lane)) & ((1 << width) - 1)
            theirs = (want >> (width * lane)) & ((1 << width) - 1)
            mark = "" if mine == theirs else "   <-- mismatch"
            lines.append(f"  lane {lane}: {fmt.decode(x)[0]:g} × {fmt.decode(y)[0]:g} → got "
                         f"0x{mine:x}, expected 0x{theirs:x}{mark}")
        return "\n".join(lines)
