"""Turn Yosys cell counts into resource figures (luts, ffs, dsps, brams) and check fit.

Each family maps its primitive cells to the resource they occupy and how many units each takes.
"""
import re

from ..errors import BuildError

RESOURCES = ("luts", "ffs", "dsps", "brams")

# cell type (regex, full match) -> (resource, units per cell)
_COSTS = {
    "ecp5": [
        (r"LUT4", "luts", 1), (r"CCU2C", "luts", 2), (r"TRELLIS_DPR16X4", "luts", 4),
        (r"TRELLIS_FF", "ffs", 1),
        (r"MULT18X18D", "dsps", 1),
        (r"DP16KD|PDPW16KD", "brams", 1),
    ],
    "ice40": [
        (r"SB_LUT4", "luts", 1),
        (r"SB_DFF\w*", "ffs", 1),
        (r"SB_MAC16", "dsps", 1),
        (r"SB_RAM40_4K\w*", "brams", 1),
    ],
    "xilinx": [
        (r"LUT[1-6]|SRL16E|SRLC32E", "luts", 1), (r"RAM(32|64)X1[SD]\w*", "luts", 2),
        (r"RAM(32|64)M|RAM128X1D", "luts", 4), (r"RAM256X1S", "luts", 4),
        (r"FD[RSCP]E\w*|LD[CP]E\w*", "ffs", 1),
        (r"DSP48E[12]", "dsps", 1),
        (r"RAMB36E[12]\w*", "brams", 1), (r"RAMB18E[12]\w*", "brams", 0.5),
    ],
}

# how to name a resource in a "does not fit" message
_LABELS = {
    "ecp5": dict(luts="LUT4s", ffs="flip-flops", dsps="MULT18X18D DSPs", brams="DP16KD block RAMs"),
    "ice40": dict(luts="logic cells", ffs="flip-flops", dsps="SB_MAC16 DSPs",
                  brams="SB_RAM40_4K block RAMs"),
    "xilinx": dict(luts="LUTs", ffs="flip-flops", dsps="DSP48 slices", brams="RAMB36 block RAMs"),
}


def resources(family: str, cells: dict) -> dict:
    """Resource use {luts, ffs, dsps, brams} of a design whose cells are `cells` (type -> count)."""
    used = dict.fromkeys(RESOURCES, 0)
    for cell, count in cells.items():
        for pattern, resource, units in _COSTS[family]:
            if re.fullmatch(pattern, cell):
                used[resource] += units * count
                break
    return {k: int(v) if float(v).is_integer() else v for k, v in used.items()}


def check_fit(board, used: dict) -> None:
    """Raise BuildError naming the first resource `used` needs beyond the board's device."""
    for resource in RESOURCES:
        need, have = used[resource], board.resources[resource]
        if need > have:
            label = _LABELS[board.family][resource]
            raise BuildError(
                f"does not fit {board.name} ({board.device}): needs {need} {label}, "
                f"the device has {have} (over by {need - have}); "
                f"choose a bigger board or a smaller design")
