"""Benchmark of the systolic arrays: real board builds plus measured MACs/cycle.

For int8 (W8A8), W4A8, FP8 E4M3 and posit(8,0) arrays: cells, DSPs, LUTs, FFs and Fmax from full
builds, MACs/cycle from a cocotb run, peak GOPS, MACs per hard multiplier (packing on and off),
the share of the DSP-bound peak, and the largest square array that fits each board.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..boards import get_board, synthesize
from ..errors import BuildError
from ..generators import elaborate, parameters_of, spec_of, to_verilog
from ..hdl.array import MAX_SIDE
from ..hdl.packing import max_factor
from .formats import parse_format
from .runner import cocotb_env, run_cocotb

FORMATS = {"int8": ("int8", "int8"), "w4a8": ("int8", "int4"),
           "e4m3": ("float8_e4m3fn", "float8_e4m3fn"), "posit8": ("posit(8,0)", "posit(8,0)")}
BOARDS = ["ulx3s-85f", "icebreaker"]
SIZES = [4, 8]
# Clock constraints: nextpnr's timing-driven placement works toward the constraint, so the
# ECP5 builds ask for 125 MHz (the 120 MHz goal with a margin) rather than the board's 100.
TARGET_MHZ = {"ulx3s-85f": 125.0}
FIT_RESOURCES = ("luts", "ffs", "dsps")


def base_spec(size, a, w):
    """The array spec of one table row; minifloat/posit arrays round each column once to `a`."""
    spec = f"array rows={size} cols={size} a={a} w={w}"
    return spec if parse_format(a).family == "int" else f"{spec} out={a}"


def measure_throughput(spec, build, seed=1, vectors=3000):
    """Steady-state MACs/cycle of `spec` from a full-rate tiled matmul on Verilator."""
    stats_path = Path(build).resolve() / "stats.json"
    result = run_cocotb(to_verilog(elaborate(spec)), "forma.sim.tb_array", build,
                        {**cocotb_env(spec, seed, vectors), "FORMA_ARRAY_STATS": stats_path})
    if result["failed"]:
        raise RuntimeError(f"{spec}: simulation failed; see {result['log']}")
    return json.loads(stats_path.read_text())


def build_row(spec, board, out_dir, macs_per_cycle):
    """One table row: the build report of `spec` on `board` and the figures derived from it."""
    array = parameters_of(spec)
    row = {"spec": spec, "board": board, "rows": array.rows, "cols": array.cols,
           "a": array.a_format.name, "w": array.w_format.name, "factor": array.factor,
           "macs_per_cycle": macs_per_cycle}
    try:
        report = synthesize(array, board, out_dir, design=spec,
                            target_mhz=TARGET_MHZ.get(board))
    except BuildError as error:
        return {**row, "fits": False, "error": str(error)}
    return derive({**row, "fits": True, "cells": sum(report["cells"].values()),
                   "luts": report["luts"], "ffs": report["ffs"], "dsps": report["dsps"],
                   "fmax_mhz": report["fmax_mhz"], "timing_met": report["timing_met"],
                   "build_seconds": report["seconds"]["total"]})


def derive(row):
    """Add the derived figures to a built row: MACs per DSP, peak GOPS = 2 x MACs/cycle x Fmax,
    and its share of the DSP-bound peak = 2 x device DSPs x (most products one multiplier of
    the generator can give for these formats) x the same Fmax."""
    board = get_board(row["board"])
    a, w = parse_format(row["a"]), parse_format(row["w"])
    best = max_factor(a, w) if a.family == w.family == "int" else 1
    peak = 2 * row["macs_per_cycle"] * row["fmax_mhz"] / 1000
    dsp_peak = 2 * board.resources["dsps"] * best * row["fmax_mhz"] / 1000
    return {**row, "macs_per_dsp": round(row["rows"] * row["cols"] / row["dsps"], 2)
            if row["dsps"] else None, "peak_gops": round(peak, 2),
            "dsp_peak_gops": round(dsp_peak, 2), "share_of_dsp_peak": round(peak / dsp_peak, 3)}


def table(rows):
    """The figures as a Markdown table."""
    head = ("| board | array | a x w | packing | cells | LUTs | FFs | DSPs | MACs/DSP | Fmax MHz "
            "| MACs/cycle | peak GOPS | share of DSP peak |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        shape = f"{r['rows']}x{r['cols']}"
        formats = f"{r['a']} x {r['w']}"
        packing = f"x{r['factor']}"
        if not r["fits"]:
            reason = r["error"].split(":", 1)[-1].split(";")[0].strip().replace("|", "\\|")
            lines.append(f"| {r['board']} | {shape} | {formats} | {packing} | does not fit: "
                         f"{reason} |||||||||")
            continue
        lines.append(
            f"| {r['board']} | {shape} | {formats} | {packing} | {r['cells']} | {r['luts']} | "
            f"{r['ffs']} | {r['dsps']} | {r['macs_per_dsp']} | {r['fmax_mhz']:.1f} | "
            f"{r['macs_per_cycle']:.2f} | {r['peak_gops']:.2f} | {r['share_of_dsp_peak']:.3f} |")
    return "\n".join(lines)


def fit_model(rows, board):
    """Predicted largest square side on `board` from built rows of one format: each resource
    modelled as base + per_pe * side**2 (least squares over the built sides), the side the
    smallest resource allows. None without two fitting sizes."""
    built = [r for r in rows if r["fits"]]
    if len({r["rows"] for r in built}) < 2:
        return None
    capacity = get_board(board).resources
    side = [r["rows"] ** 2 for r in built]
    best = MAX_SIDE
    for resource in FIT_RESOURCES:
        used = [r[resource] for r in built]
        per_pe, base = np.polyfit(side, used, 1)
        if per_pe > 0:
            best = min(best, int(np.sqrt(max(capacity[resource] - base, 0) / per_pe)))
    return max(best, 1)


def largest_square(start, build, known=None):
    """Real builds from side `start`: up while they fit, down while they fail; `known` holds
    rows already built ({side: row}), which are not built again. Returns (largest side that
    fits or None, every row seen on the way)."""
    tried, side = dict(known or {}), max(1, start)
    while 1 <= side <= MAX_SIDE:
        row = tried[side] if side in tried else build(side)
        tried[side] = row
        if row["fits"] and side + 1 not in tried:
            side += 1
        elif not row["fits"] and side - 1 not in tried:
            side -= 1
        else:
            break
    fitting = [s for s, r in tried.items() if r["fits"]]
    return (max(fitting) if fitting else None), list(tried.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=BOARDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--largest", action="store_true",
                        help="also find the largest square array per format and board: fit a "
                             "resource model to the built sizes, then build from its prediction "
                             "up while builds fit and down while they fail")
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--table-only", action="store_true",
                        help="re-derive and print the table from an existing array.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        rows = [derive(r) if r["fits"] else r
                for r in json.loads((out / "array.json").read_text())]
        (out / "array.json").write_text(json.dumps(rows, indent=1))
        print(table(rows))
        return
    rows, throughput = [], {}

    def record(row):
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)  # written after every build
        (out / "array.json").write_text(json.dumps(rows, indent=1))
        return row

    def build(spec, board, macs_per_cycle, **extra):
        print(f"[bench] {board}: {spec}", file=sys.stderr, flush=True)
        return record({**build_row(spec, board, out / board / spec_of(spec).slug,
                                   macs_per_cycle), **extra})

    for name in args.formats:
        a, w = FORMATS[name]
        for size in args.sizes:
            base = base_spec(size, a, w)
            array = parameters_of(base)
            specs = [base] if array.factor == 1 else [base, base + " packing=off"]
            # Packing changes the multiplier, not the schedule: one simulation serves both.
            stats = measure_throughput(base, out / "array-sim" / spec_of(base).slug)
            throughput[(name, size)] = stats["macs_per_cycle"] / stats["ideal"]
            for spec in specs:
                for board in args.boards:
                    build(spec, board, stats["macs_per_cycle"])
        if not args.largest:
            continue
        # The largest arrays take the sustained share of R x C measured at the largest
        # simulated size (the schedule does not depend on the size).
        share = throughput[(name, max(args.sizes))]
        for board in args.boards:
            built = [r for r in rows if r["board"] == board and r["a"] == parse_format(a).name
                     and r["w"] == parse_format(w).name and "packing=off" not in r["spec"]]
            fitting = [r["rows"] for r in built if r["fits"]]
            if not fitting:
                continue
            predicted = fit_model(built, board)
            if predicted is None:
                start = max(fitting)
                print(f"[bench] {board} {name}: one size fits, too few for the resource model; "
                      f"searching up from {start}x{start}", file=sys.stderr, flush=True)
            else:
                start = predicted
                print(f"[bench] {board} {name}: the resource model predicts {predicted}x"
                      f"{predicted}", file=sys.stderr, flush=True)
            side, _ = largest_square(start, lambda n: build(
                base_spec(n, a, w), board, share * n * n, predicted=predicted,
                macs_source=f"{share:.3f} x R x C, measured at {max(args.sizes)}x"
                            f"{max(args.sizes)}"), known={r["rows"]: r for r in built})
            print(f"[bench] {board} {name}: largest square that fits: {side}", file=sys.stderr)
    print(table(rows))
    print(f"\nwrote {out / 'array.json'}")


if __name__ == "__main__":
    main()
