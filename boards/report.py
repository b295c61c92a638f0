"""Write a build report as report.json (machine-readable) and report.md (a short table).

The Markdown lists block and harness resources side by side against the device totals.
"""
import json
from pathlib import Path

from .cells import RESOURCES


def write_reports(report: dict, folder: Path) -> None:
    """Write `report` to folder/report.json and folder/report.md."""
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (folder / "report.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    """A human-readable summary of `report`."""
    kind = "estimate (Yosys cells, no place and route)" if report["estimate"] else "placed and routed"
    lines = [f"# {report['design']} on {report['board']} ({report['device']})", "",
             f"Result: {kind}.", "",
             "| resource | block | harness | device | block % |", "|---|---:|---:|---:|---:|"]
    for r in RESOURCES:
        block, harness, device = report[r], report["harness"][r], report["device_resources"][r]
        lines.append(f"| {r} | {block} | {harness} | {device} | {100 * block / device:.2f} |")
    lines.append("")
    if report["fmax_mhz"] is not None:
        verdict = "PASS" if report["timing_met"] else "FAIL"
        lines.append(f"Fmax {report['fmax_mhz']} MHz for the {report['fmax_scope']}; "
                     f"target {report['target_mhz']} MHz: {verdict}.")
    lines.append(f"Bitstream: {report['bitstream'] or 'none'}.")
    seconds = ", ".join(f"{k} {v} s" for k, v in report["seconds"].items())
    lines += [f"Seconds: {seconds}.", "",
              "Block cells: " + ", ".join(f"{t} {n}" for t, n in report["cells"].items()), ""]
    return "\n".join(lines)
