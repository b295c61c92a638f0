"""Board registry and the real synthesis flow: bitstreams, reports, fit and failure handling.

Builds a tiny stream MAC for each board kind with the real YoWASP tools (a few seconds each).
"""
import json
from pathlib import Path

import pytest
from amaranth.hdl import Instance, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.back import rtlil
from amaranth.lib.wiring import In, Out

from forma.boards import get_board, list_boards, synthesize
from forma.boards.build import _last_error
from forma.boards.harness import Harness, block_ports
from forma.errors import BuildError, SpecError, ToolMissingError

REPORT_KEYS = {"board", "device", "design", "cells", "luts", "ffs", "dsps", "brams", "harness",
               "fmax_mhz", "target_mhz", "timing_met", "bitstream", "seconds", "estimate"}
DESIGN = "test-mac a=int8 w=int8"


class StreamMAC(wiring.Component):
    """Registered int8 x int8 multiply-accumulate into 24 bits, stream in, stream out."""

    def __init__(self):
        pair = data.StructLayout({"a": signed(8), "w": signed(8)})
        super().__init__({"i": In(stream.Signature(pair)), "o": Out(stream.Signature(signed(24)))})

    def elaborate(self, platform):
        m = Module()
        product, acc = Signal(signed(16)), Signal(signed(24))
        m.d.comb += [self.i.ready.eq(self.o.ready), self.o.valid.eq(1), self.o.payload.eq(acc)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [product.eq(self.i.payload.a * self.i.payload.w), acc.eq(acc + product)]
        return m


class ParallelMultipliers(wiring.Component):
    """`lanes` independent registered 8x8 products: one DSP each where DSPs are inferred."""

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__({"a": In(8).array(lanes), "b": In(8).array(lanes),
                          "y": Out(16).array(lanes)})

    def elaborate(self, platform):
        m = Module()
        for a, b, y in zip(self.a, self.b, self.y):
            m.d.sync += y.eq(a * b)
        return m


class UnknownPrimitive(wiring.Component):
    """Instantiates a cell no library defines, so synthesis fails."""
    x: In(1)
    y: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.nope = Instance("NO_SUCH_PRIMITIVE", i_A=self.x, o_Y=self.y)
        return m


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One StreamMAC build per board, shared by the tests below."""
    root = tmp_path_factory.mktemp("boards")
    return {name: synthesize(StreamMAC, name, root / name, DESIGN)
            for name in ("ulx3s-85f", "icebreaker", "pynq-z2")}


def test_registry_lists_the_three_reference_boards():
    assert {"ulx3s-85f", "icebreaker", "pynq-z2"} <= set(list_boards())
    assert get_board("ulx3s-85f").resources["dsps"] == 156
    assert get_board("icebreaker").synth_opts == ("-dsp",)
    assert not get_board("pynq-z2").bitstream


def test_unknown_board_lists_known_boards():
    with pytest.raises(SpecError, match=r"unknown board 'nope'; known boards: ulx3s-85f, icebreaker"):
        get_board("nope")


def test_harness_sees_every_port_of_nested_signatures():
    block = StreamMAC()
    inputs, outputs = block_ports(block)
    assert sum(map(len, inputs)) == 8 + 8 + 1 + 1   # payload, valid, and the output's ready
    assert sum(map(len, outputs)) == 24 + 1 + 1     # payload, valid, and the input's ready
    text = rtlil.convert(Harness(block, buttons=4, leds=8), name="top")
    assert "module \\top.block" in text and "cell \\top.block \\block" in text


@pytest.mark.parametrize("name, suffix", [("ulx3s-85f", ".bit"), ("icebreaker", ".bin")])
def test_open_flow_board_gives_bitstream_and_report(built, name, suffix):
    report = built[name]
    assert REPORT_KEYS <= set(report)
    assert report["bitstream"].endswith(suffix)
    with open(report["bitstream"], "rb") as f:
        assert len(f.read()) > 1000
    assert report["dsps"] >= 1 and report["ffs"] >= 40 and report["luts"] > 0
    # the harness (LFSR, input chain, output registers, IO) is counted apart from the block
    assert report["harness"]["ffs"] >= 32 and report["harness"]["dsps"] == 0
    assert report["fmax_mhz"] > 0 and report["timing_met"] == (
        report["fmax_mhz"] >= report["target_mhz"])
    assert not report["estimate"]
    folder = Path(report["bitstream"]).parent
    assert json.loads((folder / "report.json").read_text())["board"] == name
    for kept in ("report.md", "top.rpt", "top.tim", "top.il"):
        assert (folder / kept).stat().st_size > 0


def test_xilinx_part_is_an_estimate(built):
    report = built["pynq-z2"]
    assert REPORT_KEYS <= set(report)
    assert report["estimate"] and report["bitstream"] is None and report["fmax_mhz"] is None
    assert report["dsps"] >= 1 and "DSP48E1" in report["cells"]


def test_design_that_does_not_fit_names_the_resource_and_keeps_old_output(tmp_path):
    out = tmp_path / "out"
    synthesize(lambda: ParallelMultipliers(2), "icebreaker", out, "2 multipliers")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(BuildError, match=r"does not fit icebreaker \(iCE40UP5K-SG48\): needs 9 "
                                         r"SB_MAC16 DSPs, the device has 8 \(over by 1\)"):
        synthesize(lambda: ParallelMultipliers(9), "icebreaker", out, "9 multipliers")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert (tmp_path / "out.failed" / "top.rpt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.failed"]


def test_failing_tool_raises_build_error_with_log(tmp_path):
    with pytest.raises(BuildError, match=r"synth failed for ulx3s-85f .*NO_SUCH_PRIMITIVE.*"
                                         r"log: .*out\.failed/top\.rpt"):
        synthesize(UnknownPrimitive, "ulx3s-85f", tmp_path / "out", "bad")
    assert not (tmp_path / "out").exists()


def test_missing_tool_raises_tool_missing_error(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    with pytest.raises(ToolMissingError, match="no-such-yosys"):
        synthesize(StreamMAC, "pynq-z2", tmp_path / "out", DESIGN)
    assert list(tmp_path.iterdir()) == []


def test_same_block_gives_same_bitstream(built, tmp_path):
    again = synthesize(StreamMAC, "icebreaker", tmp_path / "again", DESIGN)
    with open(again["bitstream"], "rb") as a, open(built["icebreaker"]["bitstream"], "rb") as b:
        assert a.read() == b.read()


def test_target_clock_is_the_constraint_and_decides_timing_met(tmp_path):
    report = synthesize(StreamMAC, "icebreaker", tmp_path / "fast", DESIGN, target_mhz=400)
    pnr = json.loads((tmp_path / "fast" / "top.report.json").read_text())
    assert [round(c["constraint"]) for c in pnr["fmax"].values()] == [400]
    assert report["target_mhz"] == 400 and report["timing_met"] is False


def test_a_failed_stage_names_the_tools_error_not_its_tally(tmp_path):
    log = tmp_path / "top.tim"
    log.write_text("Info: placing\nERROR: Failed to expand region (0, 0) of 6168 ICESTORM_LCs\n"
                   "0 warnings, 1 error\n")
    assert _last_error([log]) == "ERROR: Failed to expand region (0, 0) of 6168 ICESTORM_LCs"
    log.write_text("Info: placing\nnextpnr: 2 errors in timing\n1 warning, 2 errors\n")
    assert _last_error([log]) == "nextpnr: 2 errors in timing"
