"""The boards and parts forma can build for: device, resource totals, flow and clock target.

Open-flow boards (ECP5, iCE40) give a bitstream; Xilinx parts give a Yosys cell estimate only.
"""
from dataclasses import dataclass, field

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..errors import SpecError

FAMILIES = ("ecp5", "ice40", "xilinx")


@dataclass(frozen=True)
class Board:
    """One build target.

    `resources` are the device totals (luts, ffs, dsps, brams) in the units that
    `forma.boards.cells` counts: LUT4s (ECP5, iCE40 logic cells), LUT6s (Xilinx), the
    family's DSP primitive, and block RAMs (DP16KD, SB_RAM40_4K, RAMB36 equivalents).
    `target_mhz` is the default clock target that timing is checked against.
    """
    name: str
    family: str
    device: str
    resources: dict = field(hash=False, compare=False)
    bitstream: bool
    target_mhz: float
    platform: type | None = None
    synth_opts: tuple[str, ...] = ()

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise SpecError(f"board '{self.name}' has family '{self.family}'; "
                            f"use one of {', '.join(FAMILIES)}")


def _xilinx(name, device, luts, ffs, dsps, brams, family="xcup"):
    """An estimate-only Xilinx part: Yosys `synth_xilinx` cell counts, no place and route."""
    return Board(name, "xilinx", device, dict(luts=luts, ffs=ffs, dsps=dsps, brams=brams),
                 bitstream=False, target_mhz=250.0 if family == "xcup" else 200.0,
                 synth_opts=("-family", family))


# Device totals: ECP5 and iCE40 as nextpnr reports them; Xilinx from AMD's product tables.
_BOARDS = [
    Board("ulx3s-85f", "ecp5", "LFE5U-85F-6BG381C",
          dict(luts=83640, ffs=83640, dsps=156, brams=208),
          bitstream=True, target_mhz=100.0, platform=ULX3S_85F_Platform),
    Board("icebreaker", "ice40", "iCE40UP5K-SG48",
          dict(luts=5280, ffs=5280, dsps=8, brams=30),
          bitstream=True, target_mhz=48.0, platform=ICEBreakerPlatform, synth_opts=("-dsp",)),
    _xilinx("pynq-z2", "xc7z020clg400-1", 53200, 106400, 220, 140, family="xc7"),
    _xilinx("zcu102", "xczu9eg-ffvb1156-2-e", 274080, 548160, 2520, 912),
    _xilinx("zcu104", "xczu7ev-ffvc1156-2-e", 230400, 460800, 1728, 312),
    _xilinx("alveo-u55c", "xcu55c-fsvh2892-2L-e", 1303680, 2607360, 9024, 2016),
    _xilinx("alveo-u250", "xcu250-figd2104-2L-e", 1728000, 3456000, 12288, 2688),
    _xilinx("vcu129", "xcvu29p-fsga2577-2L-e", 1728000, 3456000, 12288, 2688),
]
BOARDS = {board.name: board for board in _BOARDS}


def list_boards() -> list[str]:
    """Names of all known boards, in registry order (open-flow boards first)."""
    return list(BOARDS)


def get_board(name) -> Board:
    """The board called `name` (or `name` itself if it is already a Board)."""
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except KeyError:
        raise SpecError(f"unknown board '{name}'; known boards: {', '.join(BOARDS)}") from None
