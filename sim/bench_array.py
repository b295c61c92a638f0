"""Benchmark of the integer systolic arrays: real board builds plus measured MACs/cycle.

For each array: cells, DSPs, LUTs, FFs and Fmax from a full build, MACs/cycle from a cocotb run,
peak GOPS, MACs per hard multiplier with packing on and off, and the share of the DSP-bound peak.
"""
import argparse
import json
import sys
from pathlib import Path

from ..boards import get_board, synthesize
from ..errors import BuildError
from ..generators import elaborate, spec_of, to_verilog
from ..hdl.packing import max_factor
from .formats import parse_format
from .runner import cocotb_env, run_cocotb

FORMATS = [("int8", "int8"), ("int8", "int4")]
BOARDS = ["ulx3s-85f", "icebreaker"]
SIZES = [4, 8]


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
    array = elaborate(spec_of(spec))
    row = {"spec": spec, "board": board, "rows": array.rows, "cols": array.cols,
           "a": array.a_format.name, "w": array.w_format.name, "factor": array.plan.factor,
           "macs_per_cycle": macs_per_cycle}
    try:
        report = synthesize(array, board, out_dir, design=spec)
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
    best = max_factor(parse_format(row["a"]), parse_format(row["w"]))
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
            lines.append(f"| {r['board']} | {shape} | {formats} | {packing} | does not fit: "
                         f"{r['error'].split(':', 1)[-1].split(';')[0].strip()} |||||||||")
            continue
        lines.append(
            f"| {r['board']} | {shape} | {formats} | {packing} | {r['cells']} | {r['luts']} | "
            f"{r['ffs']} | {r['dsps']} | {r['macs_per_dsp']} | {r['fmax_mhz']:.1f} | "
            f"{r['macs_per_cycle']:.2f} | {r['peak_gops']:.2f} | {r['share_of_dsp_peak']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=BOARDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
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
    for size in args.sizes:
        for a, w in FORMATS:
            base = f"array rows={size} cols={size} a={a} w={w}"
            specs = [base] if elaborate(base).plan.factor == 1 else [base, base + " packing=off"]
            # Packing changes the multiplier, not the schedule: one simulation serves both.
            if base not in throughput:
                stats = measure_throughput(base, out / "array-sim" / spec_of(base).slug)
                throughput[base] = stats["macs_per_cycle"]
            for spec in specs:
                for board in args.boards:
                    print(f"[bench] {board}: {spec}", file=sys.stderr, flush=True)
                    rows.append(build_row(spec, board, out / board / spec_of(spec).slug,
                                          throughput[base]))
                    out.mkdir(parents=True, exist_ok=True)  # written after every build
                    (out / "array.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print(f"\nwrote {out / 'array.json'}")


if __name__ == "__main__":
    main()
