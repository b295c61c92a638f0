"""User-facing errors: each carries one sentence naming the problem and the fix.

The CLI prints the sentence and exits non-zero; library callers can catch them.
"""


class FormaError(Exception):
    """A problem the user can fix; str(error) is the whole message."""


class SpecError(FormaError, ValueError):
    """A bad format string, design parameter or design spec."""


class ToolMissingError(FormaError):
    """An external tool (Verilator, Yosys, nextpnr, ...) cannot be found."""


class BuildError(FormaError):
    """Synthesis, place and route or packing failed, or the design does not fit."""
