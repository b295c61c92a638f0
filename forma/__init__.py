"""forma: FPGA hardware generation and bit-exact verification for mixed-precision ML arithmetic."""


def parse_format(text):
    """Format object for a spelling such as "int8" or "float8_e4m3fn" (see forma.sim.formats)."""
    from forma.sim.formats import parse_format as _parse_format
    return _parse_format(text)
