"""Native backend: generated dataflow hardware equals QONNX execute_onnx on every digits input.

Integer reference of the engine chain vs QONNX (fast), the UART board top in Amaranth's simulator,
Verilator runs of the MLP and CNN on all 450 test inputs, and an ulx3s-85f export with a bitstream.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from forma.cli import main
from forma.errors import FormaError
from forma.generators import native, native_plan
from forma.generators.backends import ExportOptions, verdict
from forma.generators.qonnx_import import execute_onnx, import_qonnx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


def _reference(name, x):
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    specs = native_plan.plan(net)
    native_plan.fold(specs)
    raw = net.layers[0].output.format.to_raw(native_plan.input_codes(net, x))
    out = native_plan.reference(specs, raw)
    return net, specs, native_plan.output_values(net, net.output.format.from_raw(out))


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_engine_reference_equals_qonnx(name, digits):
    """The engine chain's integer reference (the hardware's spec) equals QONNX on all inputs."""
    x, y = digits
    net, _, got = _reference(name, x)
    check = verdict(execute_onnx(net.source, x), got, y)
    assert check["exact"], check.get("first_mismatch")


def test_minifloat_activations_are_refused_by_name():
    """FP8 activations (FloatQuant requantization) are refused before any build, naming the node."""
    with pytest.raises(FormaError, match=r"node 'Quant_3': minifloat \(FloatQuant float8_e4m3fn\)"):
        native.export(EXAMPLES / "digits_fp8.onnx", ExportOptions(board="ulx3s-85f"))


def test_folding_meets_budgets():
    """Fastest folding by default; a DSP cap trades lanes for a longer initiation interval."""
    net = import_qonnx(EXAMPLES / "digits_mlp.onnx")
    fast = native_plan.fold(native_plan.plan(net))
    assert fast.lanes == [32, 8, 2] and fast.multipliers == 42
    small = native_plan.fold(native_plan.plan(net), max_dsps=8)
    assert small.multipliers <= 8 and small.ii_cycles > fast.ii_cycles
    slow = native_plan.fold(native_plan.plan(net), ii=600)
    assert max(slow.cycles) <= 600 and slow.multipliers < fast.multipliers


def test_uart_top_answers_one_row(digits):
    """The board top in Amaranth's simulator: bytes in over rx, QONNX's output bytes out over tx."""
    from amaranth.sim import Simulator

    from forma.hdl.dataflow import StreamNetwork
    from forma.hdl.uart import UartNetworkTop
    x, _ = digits
    net, specs, want = _reference("digits_mlp", x[:1])
    divisor = 4
    top = UartNetworkTop(StreamNetwork(specs), clk_hz=115200 * divisor)
    codes = native_plan.input_codes(net, x[:1])[0]
    received = []

    async def host(ctx):
        for code in codes:
            for bit in [0, *((int(code) >> i) & 1 for i in range(8)), 1]:
                ctx.set(top.rx, bit)
                await ctx.tick().repeat(divisor)
        while len(received) < specs[-1].outputs:
            await ctx.tick().until(top.tx == 0)  # start bit
            await ctx.tick().repeat(divisor // 2)
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(top.tx) << i
            await ctx.tick().repeat(divisor)
            received.append(byte)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.run()
    assert np.array_equal(native_plan.output_values(net, np.array([received])), want)


@pytest.mark.sim
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_forma_run_is_bit_exact(name, digits, tmp_path):
    """`forma run` on Verilator equals QONNX bit for bit on all 450 test inputs."""
    x, y = digits
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(EXAMPLES / f"{name}.onnx"), "--inputs", str(tmp_path / "x.npy"),
                 "--outputs", str(tmp_path / "y.npy"), "--out", str(tmp_path / "run")]) == 0
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    check = verdict(execute_onnx(net.source, x), np.load(tmp_path / "y.npy"), y)
    print(f"{name}: {check['rows']} inputs, exact={check['exact']}, "
          f"accuracy {check['accuracy_backend']:.4f}")
    assert check["exact"], check.get("first_mismatch")


@pytest.mark.sim
def test_export_ulx3s_gives_bitstream_and_report(tmp_path):
    """`forma export` for ulx3s-85f: bit-exact check, bitstream, report with the listed figures."""
    x = np.load(EXAMPLES / "digits_test.npz")
    np.savez(tmp_path / "few.npz", x=x["x"][:40], y=x["y"][:40])
    out = tmp_path / "mlp"
    assert main(["export", str(EXAMPLES / "digits_mlp.onnx"), "--board", "ulx3s-85f",
                 "--out", str(out), "--test", str(tmp_path / "few.npz")]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("resources", "fmax_mhz", "latency_cycles", "initiation_interval_cycles",
                "inferences_per_s", "layers", "folding", "host_interface"):
        assert report[key] is not None, key
    assert report["exactness"]["exact"] and Path(report["bitstream"]).stat().st_size > 0
    assert (out / "report.md").read_text().startswith("# digits_mlp.onnx on ulx3s-85f")
