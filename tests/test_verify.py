"""`forma verify`: the CLI contract (last line, exit code), bad input, and mismatch notation."""
import subprocess
import sys

import numpy as np
import pytest

from forma.sim.cases import Case, corner_codes, random_codes, scaled_significands
from forma.sim.formats import parse_format


def forma(*args):
    return subprocess.run([sys.executable, "-m", "forma.cli", *args], capture_output=True, text=True)


@pytest.mark.sim
def test_verify_posit8_mul_is_exhaustive_and_exact(tmp_path):
    result = forma("verify", "mul", "posit(8,0)", "--stages", "2", "--build", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "65536 vectors, 0 mismatches (exhaustive)"


@pytest.mark.parametrize("words, message", [
    (["mul", "posit(16,1)", "--exhaustive"], "exhaustive runs stop at"),
    (["div", "posit(8,0)"], "unknown op 'div'"),
    (["mul", "posit(8,0)", "posit(8,1)"], "posit mul takes one format"),
    (["convert", "posit(8,0)"], "convert takes two formats"),
    (["mul", "posit(3,5)"], "posit(3,5): es must be in 0..4"),
    (["dot", "mxfp4", "mxint8"], "dot takes one MX format"),
    (["dot", "float8_e4m3fn"], "dot takes an MX format"),
    (["dot", "nvfp4"], "scales are not powers of two"),
    (["mac", "posit(8,0)", "--out", "float16"], "posit mac takes one format"),
    (["mac", "int8"], "mac int8: the MAC rounds its exact sum to a float format; name it with --out"),
    (["mac", "int8", "--out", "int16"], "out_fmt=int16: this PE takes float formats"),
    (["mac", "float4_e2m1fn", "--carry-bits", "2"], "only the posit mac has a quire"),
    (["mul", "posit(8,0)", "--carry-bits", "2"], "applies to the posit mac only, not mul"),
    (["mac", "posit(8,0)", "--carry-bits", "-1"], "--carry-bits -1: give the quire's carry bits"),
])
def test_bad_requests_are_one_sentence(tmp_path, words, message):
    result = forma("verify", *words, "--build", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_mismatch_is_described_in_format_notation():
    case = Case.parse("mul", ["posit(8,0)"])
    operands = [np.array([0x41], dtype=np.uint64), np.array([0x7e], dtype=np.uint64)]
    text = case.describe(operands, 0, 0x7f, 0x7e)
    assert text == ("posit(8,0) 0x41 (1.03125) × 0x7e (32) → got 0x7f (64), "
                    "expected 0x7e (32)")


def test_exhaustive_operands_cover_every_pair_a_fastest():
    case = Case.parse("add", ["float4_e2m1fn"])
    a, b = case.exhaustive()
    assert len(a) == 256 and len(set(zip(a.tolist(), b.tolist()))) == 256
    assert (a[1], b[1]) == (1, 0)


def test_random_runs_start_with_every_corner_pair_and_are_seeded():
    case = Case.parse("mul", ["posit(16,1)"])
    corners = corner_codes(case.formats[0])
    first = case.random(5000, seed=7)
    assert set(first[0][:len(corners) ** 2].tolist()) == set(corners.tolist())
    assert all(np.array_equal(x, y) for x, y in zip(first, case.random(5000, seed=7)))
    assert not np.array_equal(first[0], case.random(5000, seed=8)[0])


def test_random_codes_reach_every_posit_regime_run_of_both_kinds():
    """Uniform codes give a regime run of k bits with probability 2**-k; the drawn ones reach
    every run of zeros (tiny) and of ones (huge) among positive posit(16,1) codes."""
    codes = random_codes(parse_format("posit(16,1)"), 5000, np.random.default_rng(7))
    runs = {"0": set(), "1": set()}
    for code in codes[codes < 1 << 15].tolist():
        body = f"{code:016b}"[1:]
        runs[body[0]].add(len(body) - len(body.lstrip(body[0])))
    assert runs["0"] >= set(range(1, 15)) and runs["1"] >= set(range(1, 15)), runs


def test_mul_runs_move_every_significand_to_every_exponent():
    """bfloat16: every significand in [1, 2) and every subnormal, times every power of two
    (subnormal ones included), with both signs; the tie 0x0018 × 2^-4 = 1.5 smallest
    subnormals is among them."""
    fmt = parse_format("bfloat16")
    a, b = scaled_significands(fmt, fmt, 1 << 20, np.random.default_rng(7))
    magnitude_a, magnitude_b = a & 0x7FFF, b & 0x7FFF
    powers = {e << 7 for e in range(1, 255)} | {1 << j for j in range(7)}   # and subnormal ones
    assert len(a) == (128 + 127) * len(powers)
    assert set(magnitude_b.tolist()) == powers
    assert set(magnitude_a.tolist()) == set(range(1, 128)) | set(range(0x3F80, 0x4000))
    assert len(set((a >> 15).tolist())) == 2 and len(set((b >> 15).tolist())) == 2
    assert ((magnitude_a == 0x18) & (magnitude_b == 0x3D80)).sum() == 1
    first = Case.parse("mul", ["bfloat16"]).random(1_000_000, seed=7)
    drawn = set(zip((first[0] & 0x7FFF).tolist(), (first[1] & 0x7FFF).tolist()))
    assert set(zip(magnitude_a.tolist(), magnitude_b.tolist())) <= drawn
    sampled = scaled_significands(parse_format("posit(16,1)"), parse_format("posit(16,1)"),
                                  1000, np.random.default_rng(7))
    assert len(sampled[0]) == 1000


def test_narrow_quire_streams_reach_every_bit_and_its_limits():
    """A posit mac with a narrow quire gets streams summing to exactly +-2**k and +-(2**k - 1)
    quire units for every quire bit k, among them its limits +-(2**(w-1) - 1) and one unit
    beyond, and ties broken by one lower bit; no partial sum passes the end earlier, and the
    reference makes those beyond the limits NaR."""
    from fractions import Fraction
    from forma.sim.cases_mac import ACCUMULATION_BOUND
    case = Case.parse("mac", ["posit(8,0)"], carry_bits=2)
    fmt = case.formats[0]
    limit = (1 << (fmt.quire_width(2) - 1)) - 1
    unit = Fraction(2) ** -fmt.quire_frac_bits
    ends = set()
    for a, b in case.bit_streams():
        terms = [Fraction(float(x)) * Fraction(float(y)) / unit
                 for x, y in zip(fmt.decode(np.array(a, dtype=np.uint64)),
                                 fmt.decode(np.array(b, dtype=np.uint64)))]
        partial = np.cumsum(terms)
        assert max(abs(p) for p in partial) == abs(partial[-1])
        ends.add(int(partial[-1]))
        assert len(a) <= ACCUMULATION_BOUND
        last = np.zeros(len(a), dtype=np.uint64)
        last[-1] = 1
        result = case.reference((np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64), last))
        assert (result[-1] == fmt.nar_code) == (abs(partial[-1]) > limit)
    bits = {s * t for k in range(fmt.quire_width(2)) for t in (1 << k, (1 << k) - 1) if t
            for s in (1, -1)}
    assert bits <= ends and {limit, -limit, limit + 1, -limit - 1} <= ends
    # a tie at 20 = 2**16 units broken by the lowest quire bit alone (rounds to 24, not 16)
    assert {(1 << 16) + (1 << 14) + 1, -(1 << 16) - (1 << 14) - 1} <= ends
    default = Case.parse("mac", ["posit(8,0)"])
    assert max(len(a) for a, _ in default.bit_streams()) <= ACCUMULATION_BOUND


@pytest.mark.sim
def test_verify_narrow_quire_mac_reaches_its_limits(tmp_path):
    result = forma("verify", "mac", "posit(8,0)", "--carry-bits", "2", "--stall",
                   "--build", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(quire carry bits 2)" in result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("0 mismatches (exhaustive, seed 1)")


def test_convert_reference_gives_zero_where_the_destination_has_no_encoding():
    case = Case.parse("convert", ["float8_e5m2", "int8"])
    codes = np.array([0x7C, 0x7E, 0x3C, 0xBC], dtype=np.uint64)  # +inf, NaN, 1.0, -1.0 (int8 wraps)
    assert case.reference([codes]).tolist() == [0, 0, 1, 255]


def _corrupt_first_result(monkeypatch, case_class):
    """The case's reference with its first expected result off by one (a planted bug); one-vector
    calls (the checker's padding stream) stay right."""
    reference = case_class.reference

    def wrong(self, operands):
        want = reference(self, operands)
        if len(want) > 1:
            want[0] ^= 1
        return want
    monkeypatch.setattr(case_class, "reference", wrong)


@pytest.mark.sim
def test_verify_dot_sweeps_mx_blocks_and_reports_a_planted_mismatch(tmp_path, monkeypatch, capsys):
    """`verify dot mxfp4`: the element-pair sweep passes; the same build against a planted wrong
    expectation exits 1 with the block in MX notation and the reproducing command."""
    from forma.cli import main
    from forma.sim.cases_mx import DotCase
    build = str(tmp_path / "dot")
    blocks = len(DotCase.parse(["mxfp4"], "bfloat16").exhaustive()[0])
    words = ["verify", "dot", "mxfp4", "--out", "bfloat16", "--stages", "2", "--lanes", "1",
             "--build", build]
    result = forma(*words)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{blocks} vectors, 0 mismatches (exhaustive)"
    monkeypatch.setenv("FORMA_NO_WAVES", "1")
    _corrupt_first_result(monkeypatch, DotCase)
    assert main(words) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{blocks} vectors, 1 mismatches (exhaustive)"
    assert lines[0].startswith("mismatch: mxfp4 block (scale 2^") and "→ got 0x" in lines[0]
    assert "reproduce: forma verify dot mxfp4 --out bfloat16 --exhaustive --stages 2" in lines


@pytest.mark.sim
def test_verify_mac_checks_every_pair_in_seeded_streams(tmp_path, monkeypatch, capsys):
    """`verify mac float8_e4m3fn --out float16`: every (a, b) pair once as a product, every running
    sum checked; a planted wrong expectation is reported with its stream and the seed."""
    from forma.cli import main
    from forma.sim.cases_mac import MacCase
    build = str(tmp_path / "mac")
    words = ["verify", "mac", "float8_e4m3fn", "--out", "float16", "--seed", "5", "--lanes", "2",
             "--build", build]
    result = forma(*words)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith(" vectors, 0 mismatches (exhaustive, seed 5)")
    assert int(summary.split()[0]) >= 65536
    monkeypatch.setenv("FORMA_NO_WAVES", "1")
    _corrupt_first_result(monkeypatch, MacCase)
    assert main(words) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == summary.replace("0 mismatches", "1 mismatches")
    assert lines[0].startswith("mismatch: float8_e4m3fn mac, beat 1 of the stream at vector 0: ")
    assert "reproduce: forma verify mac float8_e4m3fn --out float16 --exhaustive --seed 5 --stages 1" in lines


def test_mac_streams_hold_every_pair_and_respect_the_bound():
    from forma.sim.cases_mac import ACCUMULATION_BOUND
    case = Case.parse("mac", ["float4_e2m1fn", "float6_e2m3fn"], out="float16")
    a, b, last = case.exhaustive(seed=3)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert {(x, y) for x in range(16) for y in range(64)} <= pairs
    ends = np.flatnonzero(last)
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert ends[-1] == len(a) - 1 and lengths.max() == ACCUMULATION_BOUND
    again = case.exhaustive(seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, last), again))
    assert not np.array_equal(last, case.exhaustive(seed=4)[2])


def test_mac_reference_is_the_running_exact_dot():
    from forma.sim.formats import dot
    case = Case.parse("mac", ["posit(8,0)"])
    rng = np.random.default_rng(11)
    a, b = (rng.integers(0, 256, 40).astype(np.uint64) for _ in "ab")
    last = np.zeros(40, dtype=np.uint64)
    last[[9, 10, 39]] = 1
    want = case.reference((a, b, last))
    fmt = case.formats[0]
    for index, begin in [(0, 0), (9, 0), (10, 10), (11, 11), (39, 11)]:
        assert want[index] == dot(a[begin:index + 1], b[begin:index + 1], fmt, fmt, fmt)
