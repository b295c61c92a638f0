"""The SIMD multiplier against the reference formats on Verilator: every lane of every 4- and 8-bit
mode exhaustively, 16-bit modes on seeded random plus corner codes, modes interleaved at random per
beat under back-pressure; the shared split array on its own; parameter checks and determinism.
"""
import numpy as np
import pytest
from amaranth.sim import Simulator

from forma.errors import SpecError
from forma.generators import to_verilog
from forma.hdl.simd_pe import DEFAULT_MODES, LaneSplit, SIMDMultiplier, SplitMultiplier
from forma.sim.bulk import run_bulk
from forma.sim.cases import corner_codes
from forma.sim.formats import dot, parse_format

WORD = 16
RANDOM_WIDE = 1_000_000      # random pairs per 16-bit mode in the default suite
INVALID_MODE_BEATS = 1000    # beats per unused mode value (their result is 0)


# --- reference -----------------------------------------------------------------------------------
def lane_codes(words, fmt, lane):
    """Lane `lane`'s codes of `fmt` in 16-bit operand words."""
    mask = np.uint64((1 << fmt.bits) - 1)
    return ((words >> np.uint64(fmt.bits * lane)) & mask).astype(np.uint64)


def lane_results(fmt, a, b):
    """The reference per lane: fmt.mul for floats and posits, the exact product for integers
    (a code of the 2w-bit integer format), with the result's bit width."""
    if fmt.family == "int":
        wide = parse_format(f"{'int' if fmt.signed else 'uint'}{2 * fmt.bits}")
        return dot(a[:, None], b[:, None], fmt, fmt, wide).astype(np.uint64), 2 * fmt.bits
    return fmt.mul(a.astype(fmt.code_dtype), b.astype(fmt.code_dtype)).astype(np.uint64), fmt.bits


def expected_results(pe, a, b, mode):
    """The 32-bit result words the PE must give for operand words a, b under `mode` (arrays)."""
    result = np.zeros(len(a), dtype=np.uint64)
    for index, fmt in enumerate(pe.modes):
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


def describe(pe, a, b, mode, got, want):
    """A mismatching beat lane by lane in the lanes' own notation."""
    if mode >= len(pe.modes):
        return f"mode {mode} (unused) → got result 0x{got:08x}, expected 0"
    fmt = pe.modes[mode]
    lines = [f"mode {mode} ({fmt.name}), a=0x{a:04x} b=0x{b:04x}:"]
    width = 2 * fmt.bits if fmt.family == "int" else fmt.bits
    for lane in range(WORD // fmt.bits):
        x, y = (np.array([(v >> (fmt.bits * lane)) & ((1 << fmt.bits) - 1)], np.uint64) for v in (a, b))
        mine = (got >> (width * lane)) & ((1 << width) - 1)
        theirs = (want >> (width * lane)) & ((1 << width) - 1)
        mark = "" if mine == theirs else "   <-- mismatch"
        lines.append(f"  lane {lane}: {fmt.decode(x)[0]:g} × {fmt.decode(y)[0]:g} → got 0x{mine:x}, "
                     f"expected 0x{theirs:x}{mark}")
    return "\n".join(lines)


# --- stimulus --------------------------------------------------------------------------------------
def exhaustive_words(fmt, rng):
    """Operand words in which every lane sees every (a, b) pair of valid codes exactly once
    (lane 0 in order, the others in seeded random orders)."""
    codes = fmt.all_codes().astype(np.uint64)
    pa, pb = (g.ravel() for g in np.meshgrid(codes, codes, indexing="ij"))
    a = np.zeros(len(pa), dtype=np.uint64)
    b = np.zeros(len(pa), dtype=np.uint64)
    for lane in range(WORD // fmt.bits):
        order = np.arange(len(pa)) if lane == 0 else rng.permutation(len(pa))
        a |= pa[order] << np.uint64(fmt.bits * lane)
        b |= pb[order] << np.uint64(fmt.bits * lane)
    return a, b


def random_words(fmt, count, rng):
    """Every pair of corner codes, then `count` seeded random pairs of valid codes."""
    corners = corner_codes(fmt).astype(np.uint64)
    ca, cb = (g.ravel() for g in np.meshgrid(corners, corners, indexing="ij"))
    drawn = rng.integers(0, 1 << fmt.bits, size=(2, count), dtype=np.uint64)
    drawn[~fmt.valid_code_mask(drawn)] = 0
    return np.concatenate([ca, drawn[0]]), np.concatenate([cb, drawn[1]])


def stimulus(pe, seed, random_wide=RANDOM_WIDE):
    """(a, b, mode, plan): every mode's beats shuffled together (seeded), so the mode changes at
    random from beat to beat; plan lists (mode, beats, 'exhaustive' | 'random')."""
    rng = np.random.default_rng(seed)
    parts, plan = [], []
    for index, fmt in enumerate(pe.modes):
        if 2 * fmt.bits <= 16:
            a, b = exhaustive_words(fmt, rng)
            how = "exhaustive per lane"
        else:
            a, b = random_words(fmt, random_wide, rng)
            how = "corners + random"
        parts.append((a, b, np.full(len(a), index, np.uint64)))
        plan.append((fmt.name, len(a), how))
    for unused in range(len(pe.modes), 1 << pe.mode_bits):
        a, b = rng.integers(0, 1 << WORD, size=(2, INVALID_MODE_BEATS), dtype=np.uint64)
        parts.append((a, b, np.full(len(a), unused, np.uint64)))
        plan.append((f"mode {unused} (unused)", len(a), "random"))
    a, b, mode = (np.concatenate(column) for column in zip(*parts))
    order = rng.permutation(len(a))
    return a[order], b[order], mode[order], plan


def check_on_verilator(pe, seed, build_dir, random_wide=RANDOM_WIDE, lanes=2):
    a, b, mode, plan = stimulus(pe, seed, random_wide)
    want = expected_results(pe, a, b, mode)
    shift = np.uint64(2 * WORD)
    vectors = a | (b << np.uint64(WORD)) | (mode << shift)
    expected = want | (mode << shift)
    width = 2 * WORD + pe.mode_bits
    result = run_bulk(pe, vectors, expected, width, width, build_dir, lanes=lanes, stall=True)
    summary = "; ".join(f"{name}: {count} beats ({how})" for name, count, how in plan)
    print(f"seed {seed}, stages {pe.stages}: {result.vectors} beats, {result.mismatches} mismatches "
          f"[{summary}] in {result.sim_seconds:.1f} s ({result.rate:,.0f} beats/s)")
    if result.mismatches:
        index, got = result.first[0]
        pytest.fail(f"{result.mismatches} mismatches (seed {seed}, FORMA_SEED={seed} to reproduce; "
                    f"build {build_dir}); first at beat {index}:\n"
                    + describe(pe, int(a[index]), int(b[index]), int(mode[index]),
                               int(got) & 0xFFFFFFFF, int(want[index])))
    return result


# --- Verilator runs --------------------------------------------------------------------------------
@pytest.mark.sim
def test_default_modes_bit_exact(tmp_path, seed):
    """FP4 x4, posit(8,0) x2, int8 x2, int4 x4 exhaustive in every lane, posit(16,1) on 1M random
    pairs plus corner codes, modes shuffled per beat, deepest pipeline, output back-pressure."""
    check_on_verilator(SIMDMultiplier(stages=3), seed, tmp_path / "build")


@pytest.mark.sim
@pytest.mark.bench
@pytest.mark.parametrize("stages", [1, 2])
def test_default_modes_other_depths(tmp_path, seed, stages):
    """The same proof through the shallower pipelines."""
    check_on_verilator(SIMDMultiplier(stages=stages), seed, tmp_path / "build")


OTHER_MODES = ("float8_e4m3fn", "float8_e5m2", "uint8", "posit(4,0)", "uint4", "int16",
               "posit(16,2)", "float16", "bfloat16")


@pytest.mark.sim
@pytest.mark.bench
def test_other_modes_bit_exact(tmp_path, seed):
    """Nine more lane formats in one PE (unused mode values included), same per-lane proof."""
    check_on_verilator(SIMDMultiplier(OTHER_MODES, stages=2), seed, tmp_path / "build",
                       random_wide=300_000)


# --- the split array alone (Amaranth's simulator) -------------------------------------------------
def split_expected(a, b, split):
    bits = {LaneSplit.WHOLE: 16, LaneSplit.HALVES: 8, LaneSplit.QUARTERS: 4}[split]
    mask = (1 << bits) - 1
    return sum((((a >> (bits * l)) & mask) * ((b >> (bits * l)) & mask)) << (2 * bits * l)
               for l in range(WORD // bits))


def test_split_multiplier_lanes_independent(seed):
    """Full-range unsigned lanes (beyond any mode's magnitudes) never disturb each other."""
    rng = np.random.default_rng(seed)
    edges = [0, 1, 0xF, 0xF0, 0xFF, 0xFF00, 0xFFFF, 0x8000, 0x8080, 0x8888, 0x7FFF, 0x1111, 0xF0F0]
    pairs = [(x, y) for x in edges for y in edges]
    pairs += [tuple(int(v) for v in rng.integers(0, 1 << 16, 2)) for _ in range(300)]
    print(f"seed {seed}: {len(pairs)} word pairs per split")
    dut = SplitMultiplier()
    failures = []

    async def bench(ctx):
        for split in LaneSplit:
            ctx.set(dut.split, split)
            for x, y in pairs:
                ctx.set(dut.a, x)
                ctx.set(dut.b, y)
                got, want = ctx.get(dut.p), split_expected(x, y, split)
                if got != want and len(failures) < 5:
                    failures.append(f"{split.name} 0x{x:04x} × 0x{y:04x}: got 0x{got:08x}, "
                                    f"expected 0x{want:08x}")

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, "\n".join(failures)


# --- parameters and output ----------------------------------------------------------------------
@pytest.mark.parametrize("modes, words", [
    ("int8", "list of 1 to 16"),
    ([], "list of 1 to 16"),
    (["int8", "float6_e3m2fn"], "modes[1]=float6_e3m2fn"),
    (["int8", "mxfp4"], "modes[1]"),
    (["int12"], "modes[0]=int12"),
    (["fixed<8,3>"], "modes[0]"),
    (["posit(8,0)", "posit(8,0)"], "appear once"),
    (["nonsense"], "modes[0]=nonsense"),
])
def test_bad_modes_rejected(modes, words):
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        SIMDMultiplier(modes)


@pytest.mark.parametrize("stages", [0, 4, 1.5, "2"])
def test_bad_stages_rejected(stages):
    with pytest.raises(SpecError, match="stages"):
        SIMDMultiplier(stages=stages)


def test_interface_and_determinism():
    pe = SIMDMultiplier(stages=2)
    assert [f.name for f in pe.modes] == [parse_format(n).name for n in DEFAULT_MODES]
    assert pe.mode_bits == 3 and pe.latency == 2
    assert [pe.lanes(k) for k in range(5)] == [4, 2, 1, 2, 4]
    assert to_verilog(SIMDMultiplier(stages=2)) == to_verilog(SIMDMultiplier(stages=2))
