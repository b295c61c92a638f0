"""hls4ml backend: a QONNX model as an hls4ml 1.3 project for a Xilinx part, checked against QONNX.

Per-layer precisions come from forma's layer list; the g++ C simulation must equal execute_onnx.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path

import numpy as np

from forma.errors import FormaError, SpecError
from forma.sim.formats import FixedFormat, FloatFormat

from .backends import (HLS_BACKENDS, IO_TYPES, ExportOptions, export_atomically, test_inputs,
                       verdict, write_report)
from .qonnx_import import Network, _label, exact_fixed, execute_onnx, import_qonnx

#: layer kinds hls4ml 1.3 converts from a cleaned QONNX graph
HLS_KINDS = ("quant", "dense", "conv2d", "relu", "maxpool2d", "reshape", "transpose", "add")
#: QONNX ops only the native backend reproduces exactly -> why hls4ml does not
NATIVE_ONLY_OPS = {
    "BipolarQuant": "forma does not map BipolarQuant to hls4ml's binary layers",
    "Trunc": "hls4ml 1.3 converts no Trunc node",
    "BatchNormalization": "hls4ml computes BatchNormalization at its own precision, not as "
                          "QONNX's float32 result",
}
INPUT_GUARD_BITS = 16  # extra fraction bits of the input type, below the input quantizer's LSB


def hls_precision(fmt: FixedFormat) -> str:
    """The hls4ml/Vitis HLS type of a forma FixedFormat: ap_fixed<W,I,Q,O> or ap_ufixed<W,I,Q,O>."""
    if not isinstance(fmt, FixedFormat):
        raise SpecError(f"format {fmt.name} has no ap_fixed type (hls4ml has no minifloats)")
    kind = "ap_fixed" if fmt.signed else "ap_ufixed"
    return f"{kind}<{fmt.bits},{fmt.int_bits},AP_{fmt.quant},AP_{fmt.overflow}>"


def input_format(network: Network) -> FixedFormat:
    """The type the C simulation reads inputs into: the input quantizer's range (signed, one spare
    integer bit), INPUT_GUARD_BITS more fraction bits, truncating and saturating.

    Inputs that are multiples of 2**-(F + INPUT_GUARD_BITS) (F: the quantizer's fraction bits,
    e.g. every input on the quantizer's grid) are then rounded exactly as QONNX rounds them.
    """
    q = network.layers[0].output.format
    ibits = q.int_bits + (2 if not q.signed else 1)
    frac = q.frac_bits + INPUT_GUARD_BITS
    return FixedFormat(ibits + frac, ibits, True, quant="TRN", overflow="SAT")


def inexpressible(network: Network) -> list[str]:
    """Why hls4ml cannot reproduce this network exactly (empty list: it can), each with the fix."""
    reasons = [f"node {_label(node)} ({node.op_type}): {NATIVE_ONLY_OPS[node.op_type]}; use the "
               "native backend" for node in network.model.graph.node
               if node.op_type in NATIVE_ONLY_OPS]
    for layer in network.layers:
        where = f"node '{layer.name}'"
        if layer.kind not in HLS_KINDS:
            reasons.append(f"{where}: {layer.kind} layers are not mapped to hls4ml by forma; use "
                           "the native backend")
        minifloat = [f for f in (layer.weight_format, layer.output.format)
                     if isinstance(f, FloatFormat)]
        if minifloat:
            reasons.append(f"{where}: FloatQuant (minifloat {minifloat[0].name}) has no hls4ml "
                           "1.3 type or rounding; use the native backend, or integer/fixed-point "
                           "quantizers")
        if layer.output.scale != 1.0:
            reasons.append(f"{where}: the non-power-of-two scale {layer.output.scale} becomes an "
                           "hls4ml ApplyAlpha layer at a default precision, never exact; use "
                           "power-of-two scale quantizers (Brevitas *FixedPoint) or the native "
                           "backend (dyadic requantization)")
        if isinstance(layer.weight_format, FixedFormat) and layer.weight_format.overflow == "WRAP":
            reasons.append(f"{where}: per-channel weight scales become hls4ml ApplyAlpha layers, "
                           "never exact; use per-tensor power-of-two weight scales")
    return list(dict.fromkeys(reasons))


def hls_config(network: Network, options: ExportOptions) -> dict:
    """hls4ml config (granularity 'name') with forma's precisions: the input type, every dense/conv
    accumulator (exact, cannot overflow), relu results; quantizers keep their types."""
    import hls4ml
    with contextlib.redirect_stdout(io.StringIO()):
        config = hls4ml.utils.config_from_onnx_model(
            network.model, granularity="name", backend=options.hls_backend,
            default_reuse_factor=options.ii)
    config["Model"]["Strategy"] = "Latency" if options.ii == 1 else "Resource"
    layers = config["LayerName"]

    def precision(name, **types):
        layers.setdefault(name, {}).setdefault("Precision", {}).update(
            {k: hls_precision(v) for k, v in types.items()})

    precision(network.input_name, result=input_format(network))
    for layer in network.layers:
        if layer.kind in ("dense", "conv2d"):
            # result stays 'auto' (inferred from accum): hls4ml fuses the bias Add into a Dense
            # or Conv layer only while that layer's output type is unspecified
            precision(layer.name, accum=layer.output.format)
        elif layer.kind in ("relu", "add"):
            precision(layer.name, result=exact_fixed(layer.output.format))
    return config


def check_convertible(network: Network, options: ExportOptions):
    """SpecError/FormaError for options hls4ml does not take and networks it cannot compute
    exactly (the first reason of `inexpressible`)."""
    if options.hls_backend not in HLS_BACKENDS:
        raise SpecError(f"hls4ml backend '{options.hls_backend}': use one of {', '.join(HLS_BACKENDS)}")
    if options.io_type not in IO_TYPES:
        raise SpecError(f"io type '{options.io_type}': use one of {', '.join(IO_TYPES)}")
    if options.ii < 1:
        raise SpecError(f"initiation interval {options.ii}: must be at least 1")
    reasons = inexpressible(network)
    if reasons:
        raise FormaError(f"hls4ml cannot compute this model exactly: {reasons[0]}")


def convert(network: Network, board, out_dir: Path, options: ExportOptions):
    """Convert with hls4ml and write the full project for the board's part; returns the HLSModel."""
    import hls4ml
    check_convertible(network, options)
    config = hls_config(network, options)
    period = 1000.0 / (options.target_mhz or board.target_mhz)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            model = hls4ml.converters.convert_from_onnx_model(
                network.model, output_dir=str(out_dir), project_name="forma_top",
                backend=options.hls_backend, io_type=options.io_type, hls_config=config,
                part=board.device, clock_period=round(period, 3))
        except Exception as error:
            raise FormaError(f"hls4ml could not convert the model: {type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}") from None
    return model


def _xilinx_board(name):
    from forma.boards import get_board
    board = get_board(name)
    if board.family != "xilinx":
        from forma.boards import BOARDS
        xilinx = [b.name for b in BOARDS.values() if b.family == "xilinx"]
        raise SpecError(f"board '{board.name}' is {board.family}; the hls4ml backend targets "
                        f"Xilinx parts: {', '.join(xilinx)}")
    return board


def simulate(model, network: Network, x: np.ndarray) -> np.ndarray:
    """compile() (g++) and predict(): outputs (N, ...) float32 in the model's output scale."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model.compile()
        rows = np.ascontiguousarray(np.asarray(x, np.float32).reshape(len(x), -1))
        out = np.asarray(model.predict(rows), dtype=np.float32)
    return out.reshape(len(x), *network.output.shape[1:])


def _layer_types(model) -> list[dict]:
    rows = []
    for layer in model.get_layers():
        types = {k: str(v.precision) for k, v in sorted(layer.types.items())
                 if k in ("result_t", "accum_t", "weight_t", "bias_t")}
        rows.append(dict(name=layer.name, kind=layer.class_name, **types))
    return rows


def export(model_path, options: ExportOptions) -> dict:
    """`forma export --backend hls4ml`: project, C simulation vs QONNX, report.json/report.md.

    Built in a sibling folder that replaces the output folder only when the C simulation is
    bit-exact (else it becomes `<out>.failed`); refusals write nothing.
    """
    board = _xilinx_board(options.board)
    started = time.monotonic()
    network = import_qonnx(model_path)
    check_convertible(network, options)
    stem = Path(str(model_path)).stem
    out = Path(options.out or Path("build") / "export" / f"{stem}-hls4ml-{board.name}")
    final = out.resolve()
    x, y, source = test_inputs(model_path, network, options)

    def make(work):
        hls = convert(network, board, work / "hls4ml_prj", options)
        with contextlib.redirect_stdout(io.StringIO()):
            hls.write()
        check = verdict(execute_onnx(network.source, x), simulate(hls, network, x), y)
        config = work / "hls4ml_prj" / "hls4ml_config.yml"  # hls4ml records its output folder
        config.write_text(config.read_text().replace(str(work), str(final)))
        report = dict(
            model=str(model_path), backend="hls4ml", out=str(out), hls_backend=options.hls_backend,
            io_type=options.io_type, board=board.name, part=board.device,
            clock_mhz=options.target_mhz or board.target_mhz, reuse_factor=options.ii,
            strategy="Latency" if options.ii == 1 else "Resource", project=str(out / "hls4ml_prj"),
            input_type=hls_precision(input_format(network)), test_set=source, exactness=check,
            layers=[dict(name=l.name, kind=l.kind, output=l.output.format.name,
                         weight=l.weight_format.name if l.weight_format else None,
                         bias=l.bias_format.name if l.bias_format else None)
                    for l in network.layers],
            hls_layers=_layer_types(hls), estimate=_native_estimate(network, board, work),
            seconds=round(time.monotonic() - started, 1))
        write_report(work, report, _markdown(report))
        if not check["exact"]:
            raise FormaError(f"the hls4ml C simulation disagrees with QONNX on "
                             f"{check['mismatching_rows']} of {check['rows']} inputs (first: row "
                             f"{check['first_mismatch']['row']}); see {work / 'report.md'}")
        return report

    return export_atomically(final, make)


def run(model_path, x, options: ExportOptions) -> np.ndarray:
    """`forma run --backend hls4ml`: C simulation outputs for inputs x, shape (N, *output[1:])."""
    board = _xilinx_board(options.board)
    network = import_qonnx(model_path)
    out = Path(options.out or Path("build") / "run" / f"{Path(str(model_path)).stem}-hls4ml")
    return simulate(convert(network, board, out / "hls4ml_prj", options), network, x)


def _native_estimate(network, board, out):
    """The native flow's Yosys estimate of the same network, when that backend provides one."""
    try:
        from . import native
    except ImportError:
        return None
    estimate = getattr(native, "estimate", None)
    return estimate(network, board, out / "native_estimate") if estimate else None


def _markdown(r: dict) -> str:
    ex = r["exactness"]
    lines = [f"# {Path(r['model']).name} on {r['board']} ({r['part']}) with hls4ml ({r['hls_backend']})",
             "",
             f"- project: `{r['project']}` ({r['io_type']}, {r['strategy']}, reuse factor "
             f"{r['reuse_factor']}, {r['clock_mhz']:g} MHz)",
             f"- input type: `{r['input_type']}`",
             f"- C simulation vs QONNX execute_onnx on {ex['rows']} inputs ({r['test_set']}): "
             + ("**bit-exact**" if ex["exact"] else f"**{ex['mismatching_rows']} rows differ**")]
    if "accuracy_reference" in ex:
        lines.append(f"- accuracy: {ex['accuracy_backend']:.4f} (QONNX {ex['accuracy_reference']:.4f})")
    if r["estimate"] is None:
        lines.append("- resource estimate: not included (the native backend's Yosys estimate is "
                     "not available yet); vendor HLS synthesis gives the real figures")
    lines += ["", "## forma layers", "", "| node | kind | output | weight | bias |", "|---|---|---|---|---|"]
    lines += [f"| {l['name']} | {l['kind']} | `{l['output']}` | `{l['weight'] or ''}` | "
              f"`{l['bias'] or ''}` |" for l in r["layers"]]
    lines += ["", "## hls4ml layers", "", "| layer | class | result_t | accum_t | weight_t | bias_t |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {h['name']} | {h['kind']} | {h.get('result_t', '')} | {h.get('accum_t', '')} | "
              f"{h.get('weight_t', '')} | {h.get('bias_t', '')} |" for h in r["hls_layers"]]
    if r["estimate"]:
        e = r["estimate"]
        lines += ["", "## forma native backend, same network (Yosys synth_xilinx estimate)", "",
                  "| lanes per layer | II (cycles) | LUTs | FFs | DSPs | BRAMs |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| {e.get('lanes')} | {e.get('model_ii_cycles')} | {e.get('luts')} | "
                  f"{e.get('ffs')} | {e.get('dsps')} | {e.get('brams')} |"]
    return "\n".join(lines) + "\n"
