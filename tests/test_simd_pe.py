"""The SIMD multiplier against the reference formats on Verilator: every lane of every 4- and 8-bit
mode exhaustively, 16-bit modes on seeded random plus corner codes, modes interleaved at random per
beat under back-pressure and input gaps; the shared split array on its own; parameter checks and
determinism.
"""
import numpy as np
import pytest
from amaranth.sim import Simulator

from forma.errors import SpecError
from forma.generators import to_verilog
from forma.hdl.simd_pe import DEFAULT_MODES, WORD, LaneSplit, SIMDMultiplier, SplitMultiplier
from forma.sim.cases import Case
from forma.sim.cases_simd import SimdCase
from forma.sim.formats import parse_format
from forma.sim.verify import verify

RANDOM_WIDE = 1_000_000      # random pairs per 16-bit mode in the default suite


def check_on_verilator(modes, stages, seed, build_dir, random_wide=RANDOM_WIDE):
    """Every beat of forma.sim.cases_simd through the PE (two copies, output back-pressure and
    input gaps)."""
    case = SimdCase(modes, stages)
    verdict = verify(case, build_dir, vectors=random_wide, seed=seed, lanes=2, stall=True)
    print(f"seed {seed}, stages {stages}: {verdict.summary} ({verdict.rate:,.0f} beats/s)")
    if verdict.mismatches:
        pytest.fail(f"{verdict.mismatches} mismatches (FORMA_SEED={seed} to reproduce; build "
                    f"{build_dir}); first:\n{verdict.first[0]}")


# --- Verilator runs --------------------------------------------------------------------------------
@pytest.mark.sim
def test_default_modes_bit_exact(tmp_path, seed):
    """FP4 x4, posit(8,0) x2, int8 x2, int4 x4 exhaustive in every lane, posit(16,1) on 1M random
    pairs plus corner codes, modes shuffled per beat, deepest pipeline, output back-pressure and
    input gaps."""
    check_on_verilator(DEFAULT_MODES, 3, seed, tmp_path / "build")


@pytest.mark.sim
@pytest.mark.bench
@pytest.mark.parametrize("stages", [1, 2])
def test_default_modes_other_depths(tmp_path, seed, stages):
    """The same proof through the shallower pipelines."""
    check_on_verilator(DEFAULT_MODES, stages, seed, tmp_path / "build")


OTHER_MODES = ("float8_e4m3fn", "float8_e5m2", "uint8", "posit(4,0)", "uint4", "int16",
               "posit(16,2)", "float16", "bfloat16")


@pytest.mark.sim
@pytest.mark.bench
def test_other_modes_bit_exact(tmp_path, seed):
    """Nine more lane formats in one PE (unused mode values included), same per-lane proof."""
    check_on_verilator(OTHER_MODES, 2, seed, tmp_path / "build", random_wide=300_000)


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


def test_verification_case_names_its_modes():
    case = Case.parse("simd", ["default"], stages=2)
    assert case.title == "simd " + " ".join(parse_format(n).name for n in DEFAULT_MODES)
    assert case.out.bits == 2 * WORD + 3 and case.space == 1 << 32
    assert Case.parse("simd", ["int4", "float4_e2m1fn"]).space == 1 << 8
    with pytest.raises(SpecError, match="--out int8"):
        Case.parse("simd", ["int8"], out="int8")
    with pytest.raises(SpecError, match="modes\\[0\\]=float6_e3m2fn"):
        Case.parse("simd", ["float6_e3m2fn"])
