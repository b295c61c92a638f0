"""Benchmark of `forma export` on a QONNX MLP, side by side with da4ml's fully parallel design.

For each board and folding choice: wall time from .onnx to bitstream, cells, Fmax, latency and
throughput of the native backend; then the same network traced by da4ml (distributed arithmetic,
one inference per cycle) and built with the same Yosys/nextpnr, for the resources/latency trade-off.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from amaranth import ClockSignal, Instance, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..boards import synthesize
from ..errors import BuildError, FormaError, SpecError
from ..generators import native
from ..generators.backends import ExportOptions, load_inputs
from ..generators.qonnx_import import execute_onnx, import_qonnx

MODEL = "examples/digits_mlp.onnx"
BOARDS = ["ulx3s-85f", "icebreaker"]
#: folding choices on the first board: (label, ExportOptions fields); "fastest" sets no cap: the
#: fastest folding that fits the board (its initiation interval is in the table)
FOLDINGS = [("fastest", {}), ("max-dsps=8", {"max_dsps": 8}),
            ("max-luts=1500", {"max_luts": 1500})]
OUT = Path("build") / "bench" / "export"


def cell_counts(report_path: Path) -> dict:
    """LUT4, carry (CCU2C/SB_CARRY), FF and DSP cells of the network alone, without the harness
    or host interface around it, from a build report."""
    cells = json.loads(Path(report_path).read_text())["cells"]
    pick = lambda *names: sum(cells.get(n, 0) for n in names)  # noqa: E731
    return {"lut4": pick("LUT4", "SB_LUT4"), "carry": pick("CCU2C", "SB_CARRY"),
            "ff": sum(v for k, v in cells.items() if "FF" in k),
            "dsp": pick("MULT18X18D", "SB_MAC16")}


def native_row(model, board, label, fields, root=OUT):
    """One `forma export` run: its figures and the wall time of each stage."""
    out = root / f"native-{board}-{label.split()[0].replace('=', '')}"
    options = ExportOptions(board=board, out=str(out), **fields)
    print(f"  native export {model} on {board} ({label})", flush=True)
    try:
        report = native.export(model, options)
    except (BuildError, SpecError) as error:
        return {"design": f"forma native, {label}", "board": board, "fits": False,
                "error": str(error)}
    ii = report["initiation_interval_cycles"]
    return {"design": f"forma native, {label}", "board": board, "fits": True,
            **cell_counts(out / "board" / "report.json"),
            "fmax_mhz": report["fmax_mhz"], "latency_cycles": report["latency_cycles"],
            "latency_ns": report["latency_ns"], "ii_cycles": ii,
            "inferences_per_s": report["inferences_per_s"],
            "bit_exact_rows": f"{report['exactness']['rows'] - report['exactness'].get('mismatching_rows', 0)}"
                              f"/{report['exactness']['rows']}",
            "seconds": report["seconds"]}


# --- da4ml ------------------------------------------------------------------------------------
def da4ml_trace(network, latency_cutoff):
    """The network as da4ml's traced logic and pipeline; layers other than quant (shift
    requantization), dense and relu are refused."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace, to_pipeline
    from da4ml.trace.ops import quantize, relu
    size = int(np.prod(network.input_shape[1:]))
    x = inputs = FixedVariableArrayInput((size,))
    for layer in network.layers:
        fmt = layer.output.format
        if layer.kind == "quant" and x is inputs:  # the input grid: data arrive quantized
            x = quantize(x, *_kif(fmt), "WRAP", "TRN")
        elif layer.kind == "quant" and layer.requant.kind == "shift":
            x = _round_half_even(x, layer.inputs[0].format, fmt, layer)
        elif layer.kind == "dense":
            weight = layer.weight_format.decode(np.asarray(layer.weight, dtype=np.uint64))
            x = x @ weight.astype(np.float64)
            if layer.bias is not None:
                x = x + layer.bias_format.decode(np.asarray(layer.bias, dtype=np.uint64))
        elif layer.kind == "relu":
            x = relu(x)
        else:
            raise FormaError(f"layer {layer.name} ({layer.kind}): the da4ml comparison traces "
                             f"quant (shift), dense and relu layers only")
    logic = comb_trace(inputs, x)
    return logic, to_pipeline(logic, latency_cutoff, verbose=False)


def _kif(fmt):
    """da4ml's (keep sign, integer bits, fraction bits) of a FixedFormat."""
    return int(fmt.signed), fmt.int_bits - int(fmt.signed), fmt.bits - fmt.int_bits


def _round_half_even(x, in_fmt, fmt, layer):
    """Saturating round-half-even of `x` (on the grid of `in_fmt`, step d) onto `fmt` (step s),
    built from da4ml's truncation, since da4ml rounds ties up: with t = floor(x) at step s,
    rne(x) = floor(x + s/2 - d + d * (t is odd)) — a tie goes up exactly when t is odd."""
    from da4ml.trace.ops import quantize
    if layer.requant.rounding != "rne":
        raise FormaError(f"layer {layer.name}: the da4ml comparison rounds half-even only, "
                         f"not {layer.requant.rounding}")
    k, i, f = _kif(fmt)
    step, fine = 2.0 ** -f, 2.0 ** -(in_fmt.bits - in_fmt.int_bits)
    wide = in_fmt.int_bits + 1
    floor_s = quantize(x, 1, wide, f, "WRAP", "TRN")
    odd = floor_s - quantize(floor_s, 1, wide, f - 1, "WRAP", "TRN")  # s when t is odd, else 0
    return quantize(x + (step / 2 - fine) + odd * (fine / step), k, i, f, "SAT", "TRN")


class VerilogBlock(wiring.Component):
    """A registered Verilog module `name` (ports clk, model_inp, model_out) as a block to build."""

    def __init__(self, name, sources: dict, in_bits, out_bits):
        self.name, self.sources = name, sources
        super().__init__({"model_inp": In(unsigned(in_bits)), "model_out": Out(unsigned(out_bits))})

    def elaborate(self, platform):
        m = Module()
        for filename, text in self.sources.items():
            platform.add_file(filename, text)
        m.submodules.net = Instance(self.name, i_clk=ClockSignal(), i_model_inp=self.model_inp,
                                    o_model_out=self.model_out)
        return m


def da4ml_row(model, board, latency_cutoff, x, root=OUT):
    """da4ml's design of `model`: cells and Fmax from a real build, latency from its pipeline,
    and how many test rows its arithmetic answers exactly as QONNX does."""
    from da4ml.codegen import RTLModel
    network = import_qonnx(model)
    started = time.monotonic()
    logic, pipe = da4ml_trace(network, latency_cutoff)
    folder = root / f"da4ml-{board}-verilog"
    RTLModel(pipe, "mlp", folder, flavor="verilog", print_latency=False).write()
    sources = {p.name: p.read_text() for p in sorted((folder / "src").glob("mlp*.v"))
               if p.name != "mlp_wrapper.v"}
    used = "\n".join(sources.values())
    sources.update({p.name: p.read_text() for p in sorted((folder / "src" / "static").glob("*.v"))
                    if f"{p.stem} " in used or f"{p.stem} #" in used})  # library modules in use
    in_bits = _port_width(sources["mlp.v"], "model_inp")
    out_bits = _port_width(sources["mlp.v"], "model_out")
    latency = len(pipe.solutions) + 1  # input register, one register per stage boundary, output
    reference = execute_onnx(network.source, x)
    ours = np.asarray(logic.predict(x.reshape(len(x), -1))) * network.output.scale
    agree = int(np.sum(np.all(ours.reshape(reference.shape) == reference, axis=1)))
    print(f"  da4ml on {board}: {in_bits}-bit input, {out_bits}-bit output, latency {latency}",
          flush=True)
    row = {"design": f"da4ml fully parallel, {latency} stages", "board": board,
           "latency_cycles": latency, "ii_cycles": 1,
           "bit_exact_rows": f"{agree}/{len(x)}"}
    try:
        build = synthesize(lambda: VerilogBlock("mlp", sources, in_bits, out_bits), board,
                           root / f"da4ml-{board}", design="da4ml digits mlp")
    except BuildError as error:
        return {**row, "fits": False, "error": str(error)}
    fmax = build["fmax_mhz"]
    return {**row, "fits": True, **cell_counts(root / f"da4ml-{board}" / "report.json"),
            "fmax_mhz": fmax, "latency_ns": round(latency * 1000 / fmax, 1) if fmax else None,
            "inferences_per_s": round(fmax * 1e6) if fmax else None,
            "seconds": {"total": round(time.monotonic() - started, 1)}}


def _port_width(verilog, port):
    for line in verilog.splitlines():
        if port in line and "[" in line and ("input" in line or "output" in line):
            return int(line.split("[")[1].split(":")[0]) + 1
    raise FormaError(f"da4ml Verilog has no port {port}")


# --- table ------------------------------------------------------------------------------------
COLUMNS = [("design", "design", 30), ("board", "board", 10), ("lut4", "LUT4", 6),
           ("carry", "carry", 6), ("ff", "FF", 6), ("dsp", "DSP", 4), ("fmax_mhz", "Fmax", 7),
           ("latency_cycles", "lat cyc", 7), ("latency_ns", "lat ns", 8), ("ii_cycles", "II", 5),
           ("inferences_per_s", "inf/s", 10), ("bit_exact_rows", "=QONNX", 8)]


def table(rows):
    lines = ["  ".join(f"{title:>{width}}" for _, title, width in COLUMNS)]
    for row in rows:
        if not row.get("fits", True):
            lines.append(f"{row['design']:>30}  {row['board']:>10}  not built: {row['error']}")
            continue
        lines.append("  ".join(f"{str(row.get(key, '—')):>{width}}" for key, _, width in COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="forma bench export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help=f"QONNX model (default {MODEL})")
    parser.add_argument("--boards", nargs="+", default=BOARDS, help="boards to build for")
    parser.add_argument("--no-da4ml", action="store_true", help="skip the da4ml comparison")
    parser.add_argument("--da4ml-latency-cutoff", type=float, default=5,
                        help="da4ml pipeline: adder depth per stage (default 5)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    x, _ = load_inputs(Path(args.model).with_name("digits_test.npz"))
    runs = [(native_row, args.model, board, label, fields, args.out)
            for board in args.boards
            for label, fields in (FOLDINGS if board == args.boards[0] else FOLDINGS[:1])]
    if not args.no_da4ml:
        runs.append((da4ml_row, args.model, args.boards[0], args.da4ml_latency_cutoff, x, args.out))
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for run, *arguments in runs:
        rows.append(run(*arguments))
        (args.out / "export.json").write_text(json.dumps(rows, indent=1))  # partial results too
    print(table(rows))
    walls = [r["seconds"]["total"] for r in rows if "forma" in r["design"] and r.get("fits")]
    if walls:
        print(f"wall time .onnx -> bitstream (incl. the Verilator check against QONNX): "
              f"{min(walls):.0f}-{max(walls):.0f} s")
    print(f"JSON: {args.out / 'export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
