"""hls4ml path: the example models' C simulation equals QONNX execute_onnx on every digits input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forma.errors import FormaError, SpecError
from forma.generators import hls4ml_backend as hb
from forma.generators.backends import ExportOptions, verdict
from forma.generators.qonnx_import import execute_onnx, import_qonnx
from forma.sim.formats import parse_format

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


def test_precision_mapping_is_one_function():
    assert hb.hls_precision(parse_format("fixed<8,3,RND_CONV,SAT>")) == \
        "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"
    assert hb.hls_precision(parse_format("ufixed<5,1>")) == "ap_ufixed<5,1,AP_TRN,AP_WRAP>"
    with pytest.raises(SpecError, match="no ap_fixed type"):
        hb.hls_precision(parse_format("float8_e4m3fn"))


@pytest.mark.parametrize("name, io_type", [("digits_cnn", "io_stream")])
def test_cnn_c_simulation_is_bit_exact(name, io_type, digits, tmp_path):
    """The CNN in io_stream: every test input gives QONNX's output, value for value."""
    x, y = digits
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    model = hb.convert(net, hb._xilinx_board("zcu104"), tmp_path / "prj",
                       ExportOptions(board="zcu104", io_type=io_type))
    check = verdict(execute_onnx(net.source, x), hb.simulate(model, net, x), y)
    assert check["exact"], check
    assert check["accuracy_backend"] > 0.95


def test_export_cli_writes_project_and_exact_report(tmp_path):
    """`forma export --backend hls4ml` on the MLP: full project for pynq-z2 + report, exact."""
    out = tmp_path / "mlp"
    done = subprocess.run([sys.executable, "-m", "forma.cli", "export",
                           str(EXAMPLES / "digits_mlp.onnx"), "--board", "pynq-z2",
                           "--backend", "hls4ml", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exactness"]["exact"] and report["exactness"]["rows"] == 450
    assert report["exactness"]["accuracy_backend"] > 0.9
    assert report["part"] == "xc7z020clg400-1"
    assert [l["weight"] for l in report["layers"] if l["kind"] == "dense"] == [
        "fixed<4,1,RND_CONV,SAT_SYM>", "fixed<2,1,RND_CONV,SAT_SYM>", "fixed<4,1,RND_CONV,SAT_SYM>"]
    prj = out / "hls4ml_prj"
    assert (prj / "firmware" / "forma_top.cpp").is_file()
    assert "xc7z020clg400-1" in (prj / "hls4ml_config.yml").read_text()
    assert f"OutputDir: {out.resolve() / 'hls4ml_prj'}\n" in (prj / "hls4ml_config.yml").read_text()
    assert "bit-exact" in (out / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["mlp"]  # built beside it, then renamed


def test_run_cli_outputs_equal_qonnx(tmp_path, digits):
    x = digits[0][:40]
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-m", "forma.cli", "run",
                           str(EXAMPLES / "digits_mlp.onnx"), "--backend", "hls4ml",
                           "--inputs", str(tmp_path / "x.npy"), "--outputs",
                           str(tmp_path / "y.npy"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "y.npy")
    assert np.array_equal(got, execute_onnx(EXAMPLES / "digits_mlp.onnx", x))


def test_fp8_model_is_refused_with_the_reason():
    net = import_qonnx(EXAMPLES / "digits_fp8.onnx")
    with pytest.raises(FormaError, match="FloatQuant .*float8_e4m3fn.* no hls4ml 1.3 type"):
        hb.convert(net, hb._xilinx_board("pynq-z2"), Path("unused"), ExportOptions())


@pytest.mark.parametrize("board, message", [
    ("zcu999", "unknown board 'zcu999'; known boards"),
    ("ulx3s-85f", "is ecp5; the hls4ml backend targets Xilinx parts: pynq-z2"),
])
def test_bad_boards_are_refused(board, message):
    with pytest.raises(SpecError, match=message):
        hb.export(EXAMPLES / "digits_mlp.onnx", ExportOptions(board=board))


def test_failing_check_leaves_the_output_folder_untouched(tmp_path, monkeypatch):
    """A C simulation that differs from QONNX (planted: one output value one LSB off, no g++
    build) keeps the previous export as it was; the project and report go to `<out>.failed`."""
    def off_by_one_lsb(model, network, x):
        out = execute_onnx(network.source, x).copy()
        out.flat[0] += network.output.format.lsb * network.output.scale
        return out

    monkeypatch.setattr(hb, "simulate", off_by_one_lsb)
    monkeypatch.setattr(hb, "_native_estimate", lambda network, board, out: None)
    out = tmp_path / "mlp"
    out.mkdir()
    (out / "previous.txt").write_text("an earlier export")
    with pytest.raises(FormaError, match=r"disagrees with QONNX on 1 of 450 inputs \(first: row "
                                         r"0\); see .*mlp\.failed/report\.md"):
        hb.export(EXAMPLES / "digits_mlp.onnx", ExportOptions(out=str(out)))
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    failed = tmp_path / "mlp.failed"
    assert not json.loads((failed / "report.json").read_text())["exactness"]["exact"]
    assert (failed / "hls4ml_prj" / "firmware" / "forma_top.cpp").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp", "mlp.failed"]


def test_refused_model_writes_nothing(tmp_path):
    with pytest.raises(FormaError, match="FloatQuant .* no hls4ml 1.3 type"):
        hb.export(EXAMPLES / "digits_fp8.onnx", ExportOptions(out=str(tmp_path / "fp8")))
    assert list(tmp_path.iterdir()) == []
