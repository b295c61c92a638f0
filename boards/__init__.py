"""Board targets: a registry of boards and parts, and the flow that builds a block for one.

`synthesize(block, board, out_dir, design)` runs Amaranth → Yosys → nextpnr → bitstream + report.
"""
from .build import synthesize
from .registry import BOARDS, Board, get_board, list_boards

__all__ = ["BOARDS", "Board", "get_board", "list_boards", "synthesize"]
