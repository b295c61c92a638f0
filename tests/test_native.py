"""Native backend: generated dataflow hardware equals QONNX execute_onnx on every digits input.

Integer reference of the engines vs QONNX (fast), the UART board top in Amaranth's simulator,
Verilator runs of the MLP, CNN and FP8 MLP on all 450 test inputs and of hand-built graphs
(residual/transpose/global-average-pool; BatchNormalization/Trunc/average over 12 positions;
BipolarQuant) on seeded random inputs, and an ulx3s-85f export with a bitstream.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from forma.boards import get_board as _board
from forma.cli import main
from forma.errors import FormaError
from forma.generators import native, native_plan
from forma.generators.backends import ExportOptions, verdict
from forma.generators.qonnx_import import execute_onnx, import_qonnx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEED = 20261122


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


def _reference(name, x):
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    specs = native_plan.plan(net)
    native_plan.fold(specs)
    return net, specs, native_plan.reference_outputs(net, specs, x)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_fp8"])
def test_engine_reference_equals_qonnx(name, digits):
    """The engines' integer reference (the hardware's spec) equals QONNX on all inputs."""
    x, y = digits
    net, _, got = _reference(name, x)
    check = verdict(execute_onnx(net.source, x), got, y)
    assert check["exact"], check.get("first_mismatch")


# --- hand-built QONNX graphs ------------------------------------------------------------------
def _graph(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [helper.make_tensor(k, TensorProto.FLOAT, np.shape(v), np.ravel(v).tolist())
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class _Builder:
    """Nodes and initializers of a small QONNX graph, quantizers by name."""

    def __init__(self):
        self.nodes, self.inits = [], {}

    def quant(self, name, src, dst, scale, bits):
        self.inits.update({f"{name}_s": np.float32(scale), f"{name}_z": np.float32(0),
                           f"{name}_b": np.float32(bits)})
        self.nodes.append(helper.make_node(
            "Quant", [src, f"{name}_s", f"{name}_z", f"{name}_b"], [dst], name=name,
            domain="qonnx.custom_op.general", signed=1, narrow=0, rounding_mode="ROUND"))

    def float_quant(self, name, src, dst, rounding="ROUND"):
        """OCP FP8 E4M3 (scale 1, bias 7, max 448)."""
        values = dict(s=1.0, e=4.0, m=3.0, bias=7.0, max=448.0)
        self.inits.update({f"{name}_{k}": np.float32(v) for k, v in values.items()})
        self.nodes.append(helper.make_node(
            "FloatQuant", [src] + [f"{name}_{k}" for k in values], [dst], name=name,
            domain="qonnx.custom_op.general", has_inf=0, has_nan=1, has_subnormal=1,
            saturation=1, rounding_mode=rounding))

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))


def _layers_graph(seed=SEED):
    """x[1,2,4,4] -> conv3x3 -> relu -> residual add of the input -> transpose (swap H, W) ->
    global average pool -> flatten -> matmul: Add, Transpose and GlobalAveragePool in one graph."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    b.quant("q0", "x", "x0", 2 ** -3, 6)
    b.inits["wc"] = rng.integers(-7, 8, (2, 2, 3, 3)).astype(np.float32) / 8
    b.quant("qwc", "wc", "wcq", 2 ** -3, 4)
    b.node("Conv", ["x0", "wcq"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
           strides=[1, 1], dilations=[1, 1], group=1)
    b.quant("qc", "conv", "cq", 2 ** -2, 8)
    b.node("Relu", ["cq"], "relu")
    b.node("Add", ["relu", "x0"], "residual")
    b.quant("qa", "residual", "aq", 2 ** -2, 8)
    b.node("Transpose", ["aq"], "swap_hw", perm=[0, 1, 3, 2])
    b.node("GlobalAveragePool", ["swap_hw"], "gap")
    b.quant("qg", "gap", "gq", 2 ** -4, 8)
    b.node("Flatten", ["gq"], "flat")
    b.inits["w"] = rng.integers(-7, 8, (2, 3)).astype(np.float32) / 4
    b.quant("qw", "w", "wq", 2 ** -2, 4)
    b.node("MatMul", ["flat", "wq"], "mm")
    b.quant("qout", "mm", "y", 2 ** -3, 8)
    return _graph(b.nodes, b.inits, (1, 2, 4, 4), (1, 3))


def _fp8_graph(rounding="ROUND"):
    """x[1,4] -> FP8 -> matmul (FP8 weights) -> FP8 -> matmul -> int8: minifloat requantizers."""
    b = _Builder()
    b.quant("q0", "x", "x0", 2 ** -4, 8)
    b.inits["w1"] = (np.arange(24, dtype=np.float32).reshape(4, 6) - 11) * 0.37
    b.float_quant("fw1", "w1", "w1q")
    b.node("MatMul", ["x0", "w1q"], "mm1")
    b.float_quant("fa", "mm1", "a1", rounding)
    b.inits["w2"] = (np.arange(12, dtype=np.float32).reshape(6, 2) - 5) / 8
    b.quant("qw2", "w2", "w2q", 2 ** -3, 4)
    b.node("MatMul", ["a1", "w2q"], "mm2")
    b.quant("qout", "mm2", "y", 2 ** -2, 8)
    return _graph(b.nodes, b.inits, (1, 4), (1, 2))


def _wide_graph():
    """x[1,2] -> 16-bit Quant -> MatMul by [0.5, 2**-11] -> Quant(2**-6, 8): exact sums need 26
    bits, so QONNX's float32 MatMul may round (test_qonnx_import shows a row where it does)."""
    b = _Builder()
    b.quant("q0", "x", "x0", 2 ** -15, 16)
    b.inits["w"] = np.array([[0.5], [2 ** -11]], dtype=np.float32)
    b.quant("qw", "w", "wq", 2 ** -11, 12)
    b.node("MatMul", ["x0", "wq"], "wide_mm")
    b.quant("qout", "wide_mm", "y", 2 ** -6, 8)
    return _graph(b.nodes, b.inits, (1, 2), (1, 1))


def _bn_trunc_gap_graph(gap_scale=2 ** -3, seed=SEED):
    """x[1,2,3,4] -> conv3x3 -> BatchNormalization -> Quant -> Trunc (v1, 2 LSBs, FLOOR) ->
    GlobalAveragePool over 12 positions (ties: an exact division by 3 first) -> Quant -> Flatten:
    each step an integer form."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    b.quant("q0", "x", "x0", 2 ** -3, 6)
    b.inits["wc"] = rng.integers(-7, 8, (3, 2, 3, 3)).astype(np.float32) / 8
    b.quant("qwc", "wc", "wcq", 2 ** -3, 4)
    b.node("Conv", ["x0", "wcq"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
           strides=[1, 1], dilations=[1, 1], group=1)
    bn = dict(scale=[1.37, -0.61, 0.93], bias=[0.11, 2.2, -0.33], mean=[0.52, -0.27, 0.05],
              var=[1.7, 0.43, 2.21])
    b.inits.update({f"bn_{k}": np.array(v, np.float32) for k, v in bn.items()})
    b.node("BatchNormalization", ["conv"] + [f"bn_{k}" for k in bn], "bn", epsilon=1e-5)
    b.quant("qbn", "bn", "bq", 2 ** -3, 9)
    b.inits.update({"t_s": np.float32(2 ** -3), "t_z": np.float32(0), "t_ib": np.float32(9),
                    "t_ob": np.float32(7)})
    b.nodes.append(helper.make_node("Trunc", ["bq", "t_s", "t_z", "t_ib", "t_ob"], ["tr"],
                                    name="tr", domain="qonnx.custom_op.general",
                                    rounding_mode="FLOOR"))
    b.node("GlobalAveragePool", ["tr"], "gap")
    b.quant("qg", "gap", "gq", gap_scale, 8)
    b.node("Flatten", ["gq"], "y")
    return _graph(b.nodes, b.inits, (1, 2, 3, 4), (1, 3))


def _bipolar_graph(seed=SEED):
    """x[1,8] -> BipolarQuant -> MatMul by bipolar weights (per-channel power-of-two scales) ->
    BatchNormalization -> BipolarQuant (scale 0.5) -> MatMul (int4 weights) -> Quant: a binarized
    layer whose BatchNormalization + sign folds into per-channel thresholds."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    b.inits.update({"bx_s": np.float32(1.0), "bw_s": np.array([[0.5, 0.25, 1, 0.5, 0.125, 1]],
                                                              np.float32),
                    "ba_s": np.float32(0.5), "w1": rng.standard_normal((8, 6)).astype(np.float32),
                    "w2": rng.integers(-7, 8, (6, 4)).astype(np.float32) / 4})
    for name, src, dst in (("bx", "x", "x0"), ("bw", "w1", "w1q")):
        b.nodes.append(helper.make_node("BipolarQuant", [src, f"{name}_s"], [dst], name=name,
                                        domain="qonnx.custom_op.general"))
    b.node("MatMul", ["x0", "w1q"], "mm1")
    bn = dict(scale=[1.1, -0.7, 0.9, 2.5, -1.3, 0.6], bias=[0.3, -0.2, 0.05, 1.0, 0.4, -0.1],
              mean=[0.5, -1.0, 0.25, 0.0, 0.7, 1.5], var=[1.2, 0.5, 3.0, 0.8, 1.0, 2.0])
    b.inits.update({f"bn_{k}": np.array(v, np.float32) for k, v in bn.items()})
    b.node("BatchNormalization", ["mm1"] + [f"bn_{k}" for k in bn], "bn", epsilon=1e-5)
    b.nodes.append(helper.make_node("BipolarQuant", ["bn", "ba_s"], ["a1"], name="ba",
                                    domain="qonnx.custom_op.general"))
    b.quant("qw2", "w2", "w2q", 2 ** -2, 4)
    b.node("MatMul", ["a1", "w2q"], "mm2")
    b.quant("qout", "mm2", "y", 2 ** -3, 8)
    return _graph(b.nodes, b.inits, (1, 8), (1, 4))


def _signed_inputs(shape, count, seed=SEED):
    """Uniform [-1, 1) inputs with exact +0.0 and -0.0 entries (BipolarQuant maps both to +1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (count, *shape)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = 0.0
    x[rng.random(x.shape) < 0.1] = -0.0
    return x


def _grid_inputs(shape, count, seed=SEED):
    """Random inputs on a fixed<6,3> / fixed<8,4> grid, every code class, seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(-40, 40, (count, *shape)) / 8


def test_layers_graph_reference_equals_qonnx():
    """Residual add (skip from a transposed input), transpose and global average pool: the
    engines' reference equals QONNX on 300 seeded random inputs; the transposes fold into the
    pool's gather table, the add reads the input stream through a FIFO."""
    model = _layers_graph()
    net = import_qonnx(model)
    specs = native_plan.plan(net)
    assert [s.kind for s in specs] == ["copy", "mac", "add", "sum", "mac"]
    assert specs[2].skip == 0 and specs[2].skip_depth == 4 * 32
    x = _grid_inputs((2, 4, 4), 300)
    print(f"seed {SEED}: 300 random inputs")
    check = verdict(execute_onnx(model, x), native_plan.reference_outputs(net, specs, x))
    assert check["exact"], check.get("first_mismatch")


@pytest.mark.parametrize("build, inputs", [
    (_bn_trunc_gap_graph, lambda: _grid_inputs((2, 3, 4), 1000)),
    (_bipolar_graph, lambda: _signed_inputs((8,), 1000))])
def test_quantizer_ops_reference_equals_qonnx(build, inputs):
    """BatchNormalization (folded into the conv as proven multipliers and offsets, or into a
    binarized MatMul as per-channel sign thresholds), Trunc, GlobalAveragePool over 12 positions,
    BipolarQuant inputs/weights/activations: the engines' reference equals QONNX on 1000 seeded
    random inputs each."""
    model, x = build(), inputs()
    net = import_qonnx(model)
    specs = native_plan.plan(net)
    want = execute_onnx(model, x)
    print(f"seed {SEED}: {len(x)} random inputs, {len(np.unique(want))} distinct outputs")
    check = verdict(want, native_plan.reference_outputs(net, specs, x))
    assert check["exact"], check.get("first_mismatch")
    assert len(np.unique(want)) >= 8


def test_fp8_requantizer_reference_equals_qonnx():
    """FloatQuant activations (E4M3, RNE, saturating) after an exact fixed-point accumulator."""
    model = _fp8_graph()
    net = import_qonnx(model)
    x = _grid_inputs((4,), 2000)
    specs = native_plan.plan(net)
    want = execute_onnx(model, x)
    check = verdict(want, native_plan.reference_outputs(net, specs, x))
    assert check["exact"], check.get("first_mismatch")
    assert len(np.unique(want)) > 20


def test_minifloat_refusals_name_the_node():
    """Only round-to-nearest-even minifloat activations map; ops that need fixed-point values
    refuse minifloat inputs before any build."""
    with pytest.raises(FormaError, match=r"node 'FloatQuant_1' \('fa'\): minifloat requantization "
                                         r"rounds to nearest even in hardware, not 'half_away'"):
        native.export(_fp8_graph("HALF_UP"), ExportOptions(board="ulx3s-85f"))
    model = _fp8_graph()
    model.graph.node.insert(5, helper.make_node("Relu", ["a1"], ["a1r"], name="relu_fp8"))
    model.graph.node[6].input[0] = "a1r"
    with pytest.raises(FormaError, match=r"node 'Relu_0' \('relu_fp8'\): a relu of minifloat "
                                         r"\(float8_e4m3fn\)"):
        native.export(model, ExportOptions(board="ulx3s-85f"))


def test_folding_meets_budgets():
    """Fastest folding by default; a DSP cap trades lanes for a longer initiation interval."""
    net = import_qonnx(EXAMPLES / "digits_mlp.onnx")
    fast = native_plan.fold(native_plan.plan(net))
    assert fast.lanes == [32, 8, 5] and fast.multipliers == 45 and fast.ii_cycles == 100
    small = native_plan.fold(native_plan.plan(net), max_dsps=8)
    assert small.multipliers <= 8 and small.ii_cycles > fast.ii_cycles
    slow = native_plan.fold(native_plan.plan(net), ii=600)
    assert slow.ii_cycles <= 600 and slow.multipliers < fast.multipliers


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
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_fp8"])
def test_forma_run_is_bit_exact(name, digits, tmp_path):
    """`forma run` on Verilator equals QONNX bit for bit on all 450 test inputs. digits_fp8 runs
    with random input gaps and output back-pressure (seeded) through its pipelined minifloat
    requantizers (three register stages each)."""
    x, y = digits
    net = import_qonnx(EXAMPLES / f"{name}.onnx")
    if name == "digits_fp8":
        specs, _ = native.design(net, _board("ulx3s-85f"), ExportOptions(board="ulx3s-85f"))
        got, timing = native.simulate(specs, net, x, tmp_path / "run", stall=True, seed=SEED)
        print(f"seed {SEED}: stalls and back-pressure; {timing}")
        assert [s.epilogue_latency() for s in specs] == [3, 3]
    else:
        np.save(tmp_path / "x.npy", x)
        assert main(["run", str(EXAMPLES / f"{name}.onnx"), "--inputs", str(tmp_path / "x.npy"),
                     "--outputs", str(tmp_path / "y.npy"), "--out", str(tmp_path / "run")]) == 0
        got = np.load(tmp_path / "y.npy")
    check = verdict(execute_onnx(net.source, x), got, y)
    print(f"{name}: {check['rows']} inputs, exact={check['exact']}, "
          f"accuracy {check['accuracy_backend']:.4f}")
    assert check["exact"], check.get("first_mismatch")


def _processes_inside(folder: Path) -> list[int]:
    """Ids of processes whose working directory is inside `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if proc.name.isdigit() and cwd.is_relative_to(folder.resolve()):
            found.append(int(proc.name))
    return found


@pytest.mark.sim
def test_export_ulx3s_gives_bitstream_and_report(tmp_path, capsys):
    """`forma export` for ulx3s-85f: bit-exact check, bitstream, report with the listed figures.
    Then a model whose float32 QONNX reference rounds on one input: the export warns first,
    runs the check, fails on that row, stops its board build and leaves the folder untouched."""
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
    # overlapped engines: the measured interval is the slowest engine's, not the sum
    assert report["initiation_interval_cycles"] == report["folding"]["model_ii_cycles"] == 100
    assert report["latency_cycles"] <= report["folding"]["model_latency_cycles"]
    assert (out / "report.md").read_text().startswith("# digits_mlp.onnx on ulx3s-85f")
    assert all(layer["reference"] is None for layer in report["layers"])
    assert report["seconds"]["total"] < report["seconds"]["simulate"] + report["seconds"]["board"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    wide = tmp_path / "wide.onnx"
    wide.write_bytes(_wide_graph().SerializeToString())
    np.savez(tmp_path / "wide.npz", x=np.array([[0.5 + 2 ** -6, 0.0], [0.5 + 2 ** -6, 2 ** -15]]))
    capsys.readouterr()
    with pytest.raises(FormaError, match=r"disagrees with QONNX on 1 of 2 inputs \(first: row 1\)"
                                         r"; simulation in .*mlp\.failed/sim"):
        native.export(wide, ExportOptions(board="ulx3s-85f", out=str(out),
                                          test=str(tmp_path / "wide.npz")))
    warning = capsys.readouterr().err
    assert "warning: QONNX computes in float32 and may round" in warning and \
        "'MatMul_0' ('wide_mm') needs 26 bits" in warning
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    failed = out.with_name("mlp.failed")
    assert (failed / "sim" / "outputs.npy").exists()  # (this small build may have finished)
    assert _processes_inside(failed) == [] and not list(tmp_path.glob(".mlp.exporting-*"))


@pytest.mark.sim
def test_forma_run_layers_graph_is_bit_exact(tmp_path):
    """`forma run` of the residual/transpose/pool graph on Verilator equals QONNX bit for bit."""
    model = _layers_graph()
    path = tmp_path / "layers.onnx"
    path.write_bytes(model.SerializeToString())
    x = _grid_inputs((2, 4, 4), 300)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                 str(tmp_path / "y.npy"), "--out", str(tmp_path / "run")]) == 0
    check = verdict(execute_onnx(model, x), np.load(tmp_path / "y.npy"))
    print(f"layers graph: {check['rows']} random inputs (seed {SEED}), exact={check['exact']}")
    assert check["exact"], check.get("first_mismatch")


@pytest.mark.sim
def test_forma_run_quantizer_ops_is_bit_exact(tmp_path):
    """`forma run` on Verilator equals QONNX bit for bit on 300 seeded random inputs each for the
    BatchNormalization/Trunc/GlobalAveragePool graph and the BipolarQuant graph."""
    for name, model, x in (("bn_trunc_gap", _bn_trunc_gap_graph(), _grid_inputs((2, 3, 4), 300)),
                           ("bipolar", _bipolar_graph(), _signed_inputs((8,), 300))):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        np.save(tmp_path / f"{name}_x.npy", x)
        assert main(["run", str(path), "--inputs", str(tmp_path / f"{name}_x.npy"), "--outputs",
                     str(tmp_path / f"{name}_y.npy"), "--out", str(tmp_path / name)]) == 0
        check = verdict(execute_onnx(model, x), np.load(tmp_path / f"{name}_y.npy"))
        print(f"{name}: {check['rows']} random inputs (seed {SEED}), exact={check['exact']}")
        assert check["exact"], check.get("first_mismatch")
