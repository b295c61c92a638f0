"""`forma verify`: the CLI contract (last line, exit code), bad input, and mismatch notation."""
import subprocess
import sys

import numpy as np
import pytest

from forma.errors import SpecError
from forma.sim.cases import Case, corner_codes


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


def test_convert_reference_gives_zero_where_the_destination_has_no_encoding():
    case = Case.parse("convert", ["float8_e5m2", "int8"])
    codes = np.array([0x7C, 0x7E, 0x3C, 0xBC], dtype=np.uint64)  # +inf, NaN, 1.0, -1.0 (int8 wraps)
    assert case.reference([codes]).tolist() == [0, 0, 1, 255]
