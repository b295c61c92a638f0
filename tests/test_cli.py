"""The `forma` command as a user runs it: generate, synth on every board kind, bad input."""
import json
import os
import subprocess
import sys

import pytest

from forma.generators import elaborate, to_verilog

REPORT_KEYS = {"board", "device", "design", "cells", "luts", "ffs", "dsps", "brams", "fmax_mhz",
               "target_mhz", "timing_met", "bitstream", "seconds"}


def forma(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "forma.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_generate_is_byte_identical_across_runs(tmp_path):
    """Two runs, one without the tool variables make exports, give the bytes the library gives."""
    bare = {k: v for k, v in os.environ.items() if k != "YOSYS"}
    for name, env in (("one.v", None), ("two.v", bare)):
        result = subprocess.run([sys.executable, "-m", "forma.cli", "generate", "mac", "a=int8",
                                 "w=int4", "acc=int24", "stages=2", "-o", str(tmp_path / name)],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
    first = (tmp_path / "one.v").read_bytes()
    assert first == (tmp_path / "two.v").read_bytes()
    assert first == to_verilog(elaborate("mac a=int8 w=int4 acc=int24 stages=2")).encode()
    assert b"module top(" in first and b"/work/" not in first


@pytest.mark.parametrize("words, message", [
    (["generate", "mac", "a=int8", "w=int0"], "w=int0: integer width (0) must be in [1, 64]"),
    (["generate", "mac", "a=int8", "w=int8", "acc=int8"], "acc=int8 is narrower than the product"),
    (["generate", "mac", "a=int8", "stages=-1"], "stages=-1: pipeline depth must be 1..8"),
    (["generate", "conv", "a=int8"], "unknown design kind 'conv'; known kinds: "),
    (["synth", "--board", "de10-nano", "mac"], "unknown board 'de10-nano'; known boards: ulx3s-85f"),
])
def test_bad_input_is_one_sentence_and_leaves_outputs_alone(tmp_path, words, message):
    earlier = tmp_path / "out.v"
    earlier.write_text("earlier output")
    result = forma(*words, *(["-o", str(earlier)] if words[0] == "generate" else []))
    assert result.returncode == 2
    assert result.stderr.startswith("forma: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert earlier.read_text() == "earlier output"


def test_boards_lists_devices_and_resources():
    result = forma("boards")
    assert result.returncode == 0
    for text in ("ulx3s-85f", "LFE5U-85F", "icebreaker", "iCE40UP5K", "pynq-z2", "xc7z020",
                 "estimate", "bitstream"):
        assert text in result.stdout


@pytest.mark.parametrize("board, bitstream", [
    ("ulx3s-85f", "top.bit"), ("icebreaker", "top.bin"), ("pynq-z2", None)])
def test_synth_mac_for_each_board_kind(tmp_path, board, bitstream):
    out = tmp_path / board
    result = forma("synth", "--board", board, "mac", "a=int8", "w=int8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["design"] == "mac a=int8 w=int8" and report["dsps"] >= 1
    if bitstream:
        assert report["bitstream"] == str(out / bitstream) and (out / bitstream).stat().st_size > 0
        assert report["fmax_mhz"] > 0 and isinstance(report["timing_met"], bool)
    else:
        assert report["bitstream"] is None and report["estimate"] is True
    assert f"mac a=int8 w=int8 on {board}" in result.stdout


def _as_from_a_terminal():
    """In the child: SIGINT delivered and not ignored, as when a user presses Ctrl-C (a test
    worker may have inherited it ignored or blocked, which Python's startup then keeps)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_interrupted_build_leaves_previous_output_intact(tmp_path):
    import signal
    out = tmp_path / "mac"
    words = ["synth", "--board", "ulx3s-85f", "mac", "a=int8", "w=int8", "--out", str(out)]
    assert forma(*words).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    process = subprocess.Popen([sys.executable, "-m", "forma.cli", *words, "--target-mhz", "50"],
                               stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal)
    for line in process.stderr:  # interrupt once elaborated: during synthesis or place and route
        if line.startswith("[elaborate"):
            process.send_signal(signal.SIGINT)
            break
    process.stderr.read()
    assert process.wait(timeout=120) == 130
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["mac"], "no partial build folders are left"
