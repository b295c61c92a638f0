"""Generators: design specs → Amaranth components → Verilog."""
from .designs import DEFAULT_DESIGN, KINDS, elaborate, parameters_of, spec_of, to_verilog

__all__ = ["DEFAULT_DESIGN", "KINDS", "elaborate", "parameters_of", "spec_of", "to_verilog"]
