"""Native backend: a QONNX model as generated folded-dataflow hardware, Verilog and a bitstream.

`export` checks the generated design on Verilator against QONNX while it builds it behind a UART
host interface; `run` simulates it on given inputs. Outputs are float32 in the model's output scale.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from forma.errors import FormaError, SpecError

from . import native_plan
from .backends import ExportOptions, export_atomically, test_inputs, verdict, write_report
from .designs import to_verilog
from .native_board import BAUD, BoardBuild
from .qonnx_import import FLOAT32_SIGNIFICAND, Network, execute_onnx, import_qonnx, \
    reference_rounding

TESTBENCH = "forma.sim.tb_network"


def design(network: Network, board, options: ExportOptions):
    """(engine specs, Folding) for `network` under the options' ii/max_luts/max_dsps; the caps
    default to the board's DSPs and 80 % of its LUTs."""
    specs = native_plan.plan(network)
    max_dsps = options.max_dsps if options.max_dsps is not None else board.resources["dsps"]
    max_luts = options.max_luts if options.max_luts is not None else \
        int(0.8 * board.resources["luts"])
    return specs, native_plan.fold(specs, options.ii, max_luts, max_dsps)


def _network(model_path) -> Network:
    network = import_qonnx(model_path)
    reasons = native_plan.unsupported(network)
    if reasons:
        raise FormaError(f"the native backend cannot map this model: {reasons[0]}")
    return network


def simulate(specs, network: Network, x: np.ndarray, build_dir, stall=False, seed=1,
             verilog=None):
    """Run the streaming top on Verilator (cocotb) for every row of x, back to back.

    Returns (float32 outputs [N, *output shape], timing): timing has latency_cycles (first input
    accepted to last output of row 0, inclusive) and ii_cycles (mean cycles between rows).
    `verilog`: the top's Verilog if already generated (else generated here).
    """
    from forma.hdl.dataflow import StreamNetwork
    from forma.sim.runner import run_cocotb

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    codes = native_plan.input_codes(network, x)
    np.save(build_dir / "inputs.npy", codes)
    per_row = specs[-1].outputs
    busy = sum(s.cycles() for s in specs)
    env = dict(FORMA_NET_DIR=build_dir, FORMA_NET_OUTPUTS=per_row, FORMA_SEED=seed,
               FORMA_NET_STALL=int(stall), FORMA_NET_CYCLES=(len(codes) + 10) * busy * 3)
    verilog = verilog if verilog is not None else to_verilog(StreamNetwork(specs))
    result = run_cocotb(verilog, TESTBENCH, build_dir / "verilator", env)
    if result["failed"] or not (build_dir / "outputs.npy").exists():
        raise FormaError(f"the network simulation failed; log: {result['log']}")
    out = np.load(build_dir / "outputs.npy")
    timing = json.loads((build_dir / "timing.json").read_text())
    ends = timing["outputs"][per_row - 1::per_row]
    measured = dict(latency_cycles=ends[0] - timing["inputs"][0] + 1,
                    ii_cycles=round((ends[-1] - ends[0]) / (len(ends) - 1), 1) if len(ends) > 1
                    else None)
    return native_plan.output_values(network, out), measured


def run(model_path, x, options: ExportOptions) -> np.ndarray:
    """`forma run` (native): outputs (N, *output shape) float32 of the simulated design for x."""
    from forma.boards import get_board
    network = _network(model_path)
    specs, _ = design(network, get_board(options.board), options)
    out = Path(options.out or Path("build") / "run" / f"{Path(str(model_path)).stem}-native")
    return simulate(specs, network, x, out / "sim", seed=options.seed)[0]


def reference_note(bits) -> str | None:
    """What a layer's float32 QONNX reference is: None (exact) or why it may round."""
    if bits is None or bits <= FLOAT32_SIGNIFICAND:
        return None
    return f"reference may round: accumulator needs {bits} bits > {FLOAT32_SIGNIFICAND}"


def _layers(network, specs, folding):
    rows, engines = [], {spec.name: (spec, cycles) for spec, cycles in zip(specs, folding.cycles)}
    rounding = reference_rounding(network)
    for layer in network.layers:
        row = dict(name=layer.name, origin=layer.origin or layer.name, kind=layer.kind,
                   output=layer.output.format.name,
                   weight=layer.weight_format.name if layer.weight_format else None,
                   bias=layer.bias_format.name if layer.bias_format else None,
                   reference=reference_note(rounding.get(layer.name)))
        if layer.requant is not None:
            row["requant"] = dict(vars(layer.requant))
        row.update({k: layer.attrs[k] for k in ("qonnx_op", "folded") if k in layer.attrs})
        if layer.name in engines:
            spec, cycles = engines[layer.name]
            row.update(engine=spec.kind, lanes=spec.lanes, channels=spec.channels,
                       reduction=spec.reduction, positions=spec.positions, engine_cycles=cycles,
                       engine_interval=spec.interval(),
                       accumulator=f"int{spec.acc_shape().width}")
        rows.append(row)
    return rows


def _warn_reference_rounding(network):
    """One stderr line naming the layers whose float32 QONNX reference may round."""
    rounding = reference_rounding(network)
    if rounding:
        labels = {layer.name: layer.label for layer in network.layers}
        print("warning: QONNX computes in float32 and may round where an exact accumulator needs "
              f"more than {FLOAT32_SIGNIFICAND} bits: " + ", ".join(
                  f"{labels[name]} needs {bits} bits" for name, bits in rounding.items())
              + "; the check against QONNX still runs", file=sys.stderr, flush=True)
    return rounding


def _check_and_build(specs, network, x, y, options, board, work, stem, verilog, seconds):
    """The Verilator check (a thread; Verilator and the simulation are child processes) and the
    board build (a child process group) at the same time; the build is stopped as soon as the
    check fails. Returns (check, timing, build, clock_hz)."""
    board_build = BoardBuild(specs, board.name, work / "board", design=f"native {stem}",
                             target_mhz=options.target_mhz, seed=options.seed)
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            simulation = pool.submit(simulate, specs, network, x, work / "sim", seed=options.seed,
                                     verilog=verilog)
            stage = time.monotonic()
            reference = execute_onnx(network.source, x)
            seconds["reference"] = time.monotonic() - stage
            result, timing = simulation.result()
            seconds["simulate"] = time.monotonic() - started
        check = verdict(reference, result, y)
        if not check["exact"]:
            raise FormaError(f"the generated design disagrees with QONNX on "
                             f"{check['mismatching_rows']} of {check['rows']} inputs (first: row "
                             f"{check['first_mismatch']['row']}); simulation in {work / 'sim'}")
        build, clock_hz = board_build.wait()
        seconds["board"] = board_build.seconds
    finally:
        board_build.cancel()
    return check, timing, build, clock_hz


def export(model_path, options: ExportOptions) -> dict:
    """`forma export` (native): Verilog, Verilator check vs QONNX, bitstream or estimate, report.

    The check and the board build run at the same time, in a sibling folder that replaces the
    output folder only when the check is bit-exact and the build succeeded. Figures: latency and
    initiation interval in cycles as measured in simulation; ns and inferences/s at the placed
    Fmax (open-flow boards) or at the target clock (estimates).
    """
    from forma.boards import get_board
    from forma.boards.report import write_reports
    from forma.hdl.dataflow import StreamNetwork

    started = time.monotonic()
    board = get_board(options.board)
    network = _network(model_path)
    specs, folding = design(network, board, options)
    stem = Path(str(model_path)).stem
    out = Path(options.out or Path("build") / "export" / f"{stem}-native-{board.name}")
    final = out.resolve()
    x, y, source = test_inputs(model_path, network, options)
    verilog = to_verilog(StreamNetwork(specs))
    _warn_reference_rounding(network)
    seconds = dict(generate=time.monotonic() - started)

    def make(work):
        (work / "network.v").write_text(verilog)
        check, timing, build, clock_hz = _check_and_build(
            specs, network, x, y, options, board, work, stem, verilog, seconds)
        if build["bitstream"]:  # the build's paths as they will be once `work` is `out`
            build["bitstream"] = build["bitstream"].replace(str(work), str(final))
            write_reports(build, work / "board")
        seconds["total"] = time.monotonic() - started
        report = _report(model_path, network, specs, folding, options, board, out, build,
                         clock_hz, timing, check, source, seconds)
        write_report(work, report, _markdown(report))
        return report

    return export_atomically(final, make)


def _report(model_path, network, specs, folding, options, board, out, build, clock_hz, timing,
            check, source, seconds):
    mhz = build["fmax_mhz"] or build["target_mhz"]
    resources = {k: build[k] + build["harness"][k] for k in ("luts", "ffs", "dsps", "brams")}
    report = dict(
        model=str(model_path), backend="native", out=str(out), board=board.name,
        part=board.device, verilog=str(out / "network.v"), bitstream=build["bitstream"],
        estimate=build["estimate"], target_mhz=build["target_mhz"], fmax_mhz=build["fmax_mhz"],
        timing_met=build["timing_met"], resources=resources,
        resources_network={k: build[k] for k in ("luts", "ffs", "dsps", "brams")},
        resources_host_interface={k: build["harness"][k] for k in ("luts", "ffs", "dsps", "brams")},
        device_resources=build["device_resources"],
        latency_cycles=timing["latency_cycles"], initiation_interval_cycles=timing["ii_cycles"],
        latency_ns=round(timing["latency_cycles"] * 1000.0 / mhz, 1),
        inferences_per_s=round(mhz * 1e6 / timing["ii_cycles"]) if timing["ii_cycles"] else None,
        clock_for_figures_mhz=mhz,
        host_interface=None if clock_hz is None else dict(
            uart_baud=BAUD, board_clock_mhz=clock_hz / 1e6,
            protocol="host sends each input code as ceil(bits/8) little-endian bytes, in order; "
                     "the board answers with each output code the same way",
            input_codes=specs[0].in_size, input_bytes_per_code=-(-specs[0].in_shape.width // 8),
            output_codes=specs[-1].outputs,
            output_bytes_per_code=-(-specs[-1].out_shape.width // 8),
            input_format=network.layers[0].output.format.name,
            output_format=network.output.format.name, output_scale=network.output.scale),
        folding=dict(lanes=folding.lanes, engine_cycles=folding.cycles,
                     engine_intervals=[s.interval() for s in specs], engines=[s.kind for s in specs],
                     model_ii_cycles=folding.ii_cycles, model_latency_cycles=folding.latency_cycles, multipliers=folding.multipliers,
                     luts_model=folding.luts_model, reason=folding.reason, requested_ii=options.ii,
                     max_luts=options.max_luts, max_dsps=options.max_dsps),
        layers=_layers(network, specs, folding), test_set=source, exactness=check,
        seconds={k: round(v, 1) for k, v in seconds.items()})
    return report


def estimate(network: Network, board, out_dir):
    """Yosys resource estimate of the native design for `network` on `board` (LFSR harness, no
    host interface), or None when the native backend cannot map the network."""
    from forma.boards import get_board, synthesize
    from forma.hdl.dataflow import StreamNetwork
    board = get_board(board)
    try:
        specs, folding = design(network, board, ExportOptions(board=board.name))
    except SpecError:
        return None
    build = synthesize(lambda: StreamNetwork(specs), board, out_dir, design="native estimate")
    return dict(board=board.name, lanes=folding.lanes, model_ii_cycles=folding.ii_cycles,
                **{k: build[k] for k in ("luts", "ffs", "dsps", "brams")})


def _markdown(r: dict) -> str:
    ex, res, dev = r["exactness"], r["resources"], r["device_resources"]
    kind = "bitstream" if r["bitstream"] else "Yosys estimate (no place and route)"
    lines = [f"# {Path(r['model']).name} on {r['board']} ({r['part']}), native backend", "",
             f"- Verilator (cocotb) vs QONNX execute_onnx on {ex['rows']} inputs "
             f"({r['test_set']}): " + ("**bit-exact**" if ex["exact"] else
                                       f"**{ex['mismatching_rows']} rows differ**")]
    lines += [f"- {l['name']} ({l['origin']}): QONNX's float32 {l['reference']}; the check "
              "still compares every value" for l in r["layers"] if l["reference"]]
    if "accuracy_reference" in ex:
        lines.append(f"- accuracy: {ex['accuracy_backend']:.4f} (QONNX "
                     f"{ex['accuracy_reference']:.4f})")
    lines.append(f"- result: {kind}" + (f" `{r['bitstream']}`" if r["bitstream"] else ""))
    if r["fmax_mhz"] is not None:
        lines.append(f"- Fmax {r['fmax_mhz']} MHz (target {r['target_mhz']:g} MHz: "
                     f"{'PASS' if r['timing_met'] else 'FAIL'})")
    lines += [f"- latency {r['latency_cycles']} cycles = {r['latency_ns']} ns, initiation interval "
              f"{r['initiation_interval_cycles']} cycles, {r['inferences_per_s']} inferences/s "
              f"at {r['clock_for_figures_mhz']:g} MHz",
              f"- folding: lanes {r['folding']['lanes']}; {r['folding']['reason']}",
              f"- engines {r['folding']['engines']} overlap (double-buffered inputs): intervals "
              f"{r['folding']['engine_intervals']} cycles, modelled initiation interval "
              f"{r['folding']['model_ii_cycles']} and latency "
              f"{r['folding']['model_latency_cycles']} cycles",
              f"- wall time .onnx -> {'bitstream' if r['bitstream'] else 'estimate'}: "
              f"{r['seconds']['total']} s (" + ", ".join(
                  f"{k} {v} s" for k, v in r["seconds"].items() if k != "total")
              + "; the check and the board build run at the same time)",
              "", "| resource | network | host interface | total | device | % |",
              "|---|---:|---:|---:|---:|---:|"]
    for k in ("luts", "ffs", "dsps", "brams"):
        lines.append(f"| {k} | {r['resources_network'][k]} | {r['resources_host_interface'][k]} | "
                     f"{res[k]} | {dev[k]} | {100 * res[k] / dev[k]:.1f} |")
    h = r["host_interface"]
    if h:
        lines += ["", f"Host interface: UART {h['uart_baud']} baud 8N1 at the "
                  f"{h['board_clock_mhz']:g} MHz board clock. Send {h['input_codes']} codes "
                  f"({h['input_format']}, {h['input_bytes_per_code']} byte(s) each, little-endian);"
                  f" receive {h['output_codes']} codes ({h['output_format']}, "
                  f"{h['output_bytes_per_code']} byte(s) each). `examples/host.py` does both."]
    lines += ["", "| node | kind | output | weight | lanes | engine cycles | accumulator | "
              "QONNX reference |", "|---|---|---|---|---:|---:|---|---|"]
    lines += [f"| {l['name']} | {l['kind']} | `{l['output']}` | `{l['weight'] or ''}` | "
              f"{l.get('lanes', '')} | {l.get('engine_cycles', '')} | {l.get('accumulator', '')} | "
              f"{l['reference'] or ''} |" for l in r["layers"]]
    return "\n".join(lines) + "\n"
