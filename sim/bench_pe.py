"""Cost table of the processing elements: cells, flip-flops, DSPs and Fmax from real board builds,
for each PE family and a representative set of formats, without and with the deepest pipeline.

`forma bench pe [--quick] [--only TEXT] [--boards ...]`; JSON rows go to build/bench/pe.json.
"""
import argparse
import gc
import importlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..boards import get_board, synthesize
from ..errors import BuildError, SpecError

FLOATS = ["float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float4_e2m1fn", "bfloat16", "float16"]
POSITS = ["posit(8,0)", "posit(8,2)", "posit(16,1)"]
MX = ["mxfp8_e4m3", "mxfp4"]
BOARDS = ["ulx3s-85f", "icebreaker"]
MAX_STAGES = 16   # probing bound for a PE's deepest pipeline
# cell columns: (heading, ECP5 Yosys cell, iCE40 Yosys cell)
CELL_COLUMNS = [("LUT4", "LUT4", "SB_LUT4"), ("CCU2C", "CCU2C", "SB_CARRY")]
PLACED_COMB = {"ecp5": "TRELLIS_COMB", "ice40": "ICESTORM_LC"}


@dataclass(frozen=True)
class Entry:
    """One PE and format: `make(stages)` builds it (module:class plus positional arguments)."""
    pe: str
    label: str
    target: str
    args: tuple
    kwargs: tuple = ()

    def make(self, stages):
        module, name = self.target.split(":")
        cls = getattr(importlib.import_module(f"forma.hdl.{module}"), name)
        return cls(*self.args, stages=stages, **dict(self.kwargs))

    def deepest(self):
        """The largest `stages` the PE accepts (probed: each PE validates its own range)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # probes are never elaborated
            depth = 1
            while depth < MAX_STAGES:
                try:
                    self.make(depth + 1)
                except SpecError:
                    break
                depth += 1
            gc.collect()                             # the probes warn when collected
            return depth


def entries():
    """Every PE family on its representative formats (MX dot only once hdl/mx_pe.py imports)."""
    rows = []
    for op, name in (("mul", "FloatMultiplier"), ("add", "FloatAdder"), ("fma", "FloatFMA")):
        rows += [Entry(f"float {op}", f, f"float_pe:{name}", (f,)) for f in FLOATS]
    rows.append(Entry("kulisch mac", "float8_e4m3fn -> float16", "float_mac:FloatMAC",
                      ("float8_e4m3fn", "float8_e4m3fn", "float16")))
    for src, dst in (("float8_e4m3fn", "fixed<8,3>"), ("float16", "float8_e4m3fn")):
        rows.append(Entry("convert", f"{src} -> {dst}", "float_pe:Converter", (src, dst)))
    for op, name in (("mul", "PositMultiplier"), ("add", "PositAdder"), ("fma", "PositFMA"),
                     ("quire mac", "PositQuireMAC")):
        rows += [Entry(f"posit {op}", p, f"posit_pe:{name}", (p,)) for p in POSITS]
    try:
        importlib.import_module("forma.hdl.mx_pe")
    except ImportError:
        pass
    else:
        rows += [Entry("mx dot", f"{f} -> float32", "mx_pe:MXDotPE", (f,)) for f in MX]
    return rows


QUICK = {("float mul", "float8_e4m3fn"), ("float add", "float8_e4m3fn"), ("float mul", "bfloat16"),
         ("posit mul", "posit(8,0)"), ("convert", "float8_e4m3fn -> fixed<8,3>")}


def build_row(entry, stages, board, out_dir):
    """One table row: the build report of `entry` at `stages` on `board`, or why it has none."""
    pe = entry.make(stages)
    row = {"pe": entry.pe, "format": entry.label, "board": board, "stages": stages,
           "latency": pe.latency}
    family = get_board(board).family
    try:
        report = synthesize(pe, board, out_dir, design=f"{entry.pe} {entry.label} stages={stages}")
    except BuildError as error:
        text = str(error)
        return {**row, "fits": False,
                "error": "does not fit" if text.startswith("does not fit") else text}
    cells = report["cells"]
    placed = (report.get("pnr_utilization") or {}).get(PLACED_COMB[family], {})
    return {**row, "fits": True,
            **{head: cells.get(ecp5 if family == "ecp5" else ice40, 0)
               for head, ecp5, ice40 in CELL_COLUMNS},
            "comb_placed": placed.get("used"), "luts": report["luts"], "ffs": report["ffs"],
            "dsps": report["dsps"], "fmax_mhz": report["fmax_mhz"],
            "harness_luts": report["harness"]["luts"], "harness_ffs": report["harness"]["ffs"],
            "cells": cells, "build_seconds": report["seconds"]["total"]}


HEAD = ["PE", "format", "board", "stages", "latency", "LUT4", "CCU2C", "TRELLIS_COMB", "FF",
        "DSP", "Fmax MHz"]


def table(rows):
    """The figures as a Markdown table (TRELLIS_COMB: placed logic cells of the whole design,
    harness included; iCE40 rows give SB_LUT4, SB_CARRY and ICESTORM_LC in those columns)."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        first = [r["pe"], r["format"], r["board"], str(r["stages"]), str(r["latency"])]
        if not r["fits"]:
            lines.append("| " + " | ".join(first + [r["error"]] + [""] * 5) + " |")
            continue
        lines.append("| " + " | ".join(first + [str(r["LUT4"]), str(r["CCU2C"]),
                                                str(r["comb_placed"]), str(r["ffs"]),
                                                str(r["dsps"]), f"{r['fmax_mhz']:.1f}"]) + " |")
    return "\n".join(lines)


def select(rows, quick, only):
    """The entries kept by --quick (the QUICK set) and --only (substrings of 'pe format')."""
    chosen = [e for e in rows if not quick or (e.pe, e.label) in QUICK]
    if only:
        chosen = [e for e in chosen if any(text in f"{e.pe} {e.label}" for text in only)]
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(prog="forma bench pe", description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=BOARDS, help="boards to build on")
    parser.add_argument("--quick", action="store_true",
                        help="a few representative PEs only (8-bit float mul/add, bf16 mul, "
                             "posit(8,0) mul, one converter)")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="only PEs whose 'family op format' text contains one of these")
    parser.add_argument("--stages", choices=["both", "1", "max"], default="both",
                        help="stages=1, the deepest pipeline, or both (default)")
    parser.add_argument("--out", default="build/bench", help="output folder (default build/bench)")
    args = parser.parse_args(argv)
    for board in args.boards:
        get_board(board)                                   # unknown names fail before any build
    chosen = select(entries(), args.quick, args.only)
    if not chosen:
        raise SpecError(f"--only {' '.join(args.only)}: no PE matches; PEs are e.g. "
                        f"'float mul float8_e4m3fn', 'posit add posit(8,0)', 'kulisch mac'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = []
    for entry in chosen:
        deepest = entry.deepest()
        depths = {"1": [1], "max": [deepest], "both": sorted({1, deepest})}[args.stages]
        plan += [(entry, stages, board) for stages in depths for board in args.boards]
    rows, started = [], time.perf_counter()
    for number, (entry, stages, board) in enumerate(plan, 1):
        slug = "".join(c if c.isalnum() or c in "._-" else "_"
                       for c in f"{entry.pe}-{entry.label}-stages{stages}")
        print(f"[bench pe {number}/{len(plan)}] {board}: {entry.pe} {entry.label} stages={stages} "
              f"({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)
        row = build_row(entry, stages, board, out / "pe" / board / slug)
        rows.append(row)
        done = f"{row['fmax_mhz']:.1f} MHz, {row['luts']} LUTs" if row["fits"] else row["error"]
        print(f"[bench pe {number}/{len(plan)}] -> {done}", file=sys.stderr, flush=True)
        (out / "pe.json").write_text(json.dumps(rows, indent=1))   # kept after every build
    print(table(rows))
    print(f"\nwrote {out / 'pe.json'}")


if __name__ == "__main__":
    main()
