"""Design kinds the CLI can build: spec words → Amaranth component → Verilog.

Each kind names its keys and a builder taking the parsed spec; one place for every generator.
"""
from dataclasses import dataclass
from typing import Callable

from amaranth.back import verilog

from .. import toolenv
from ..errors import SpecError
from ..hdl.array import SystolicArray
from ..hdl.mac import IntegerMAC
from .spec import DesignSpec, parse_spec


def _int_param(params, key, default):
    text = params.get(key)
    if text is None:
        return default
    try:
        return int(text, 0)
    except ValueError:
        raise SpecError(f"{key}={text}: expected an integer") from None


def _build_mac(params):
    return IntegerMAC(params.get("a", "int8"), params.get("w", "int8"), params.get("acc"),
                      length=_int_param(params, "length", 1024),
                      stages=_int_param(params, "stages", 1))

MX_ARRAY_KEYS = ("rows", "cols", "a", "w", "out", "dataflow")


def _is_mx(name):
    from ..sim.formats.mx import MX_SPECS
    return name in MX_SPECS


def _names_mx(params):
    """Whether array parameters name an MX format for a or w."""
    return _is_mx(params.get("a")) or _is_mx(params.get("w"))


def _build_mx_array(params):
    from ..hdl.mx_array import MXSystolicArray
    a, w = params.get("a"), params.get("w")
    for key, name in (("a", a), ("w", w)):
        if name is not None and not _is_mx(name):
            other = "w" if key == "a" else "a"
            raise SpecError(f"{key}={name}: an MX array ({other}={params[other]}) takes MX "
                            f"block formats for both a and w, e.g. {key}={params[other]}")
    for key in params:
        if key not in MX_ARRAY_KEYS:
            raise SpecError(f"{key}={params[key]}: MX arrays take {', '.join(MX_ARRAY_KEYS)} "
                            f"(they sum in out=FMT; no acc, length or packing)")
    if params.get("dataflow", "os") != "os":
        raise SpecError(f"dataflow={params['dataflow']}: MX arrays are output-stationary; use "
                        f"dataflow=os")
    return MXSystolicArray(a or w, w or a, params.get("out", "float32"),
                           rows=_int_param(params, "rows", 4), cols=_int_param(params, "cols", 4))


def _build_array(params):
    if _names_mx(params):
        return _build_mx_array(params)
    return SystolicArray(params.get("a", "int8"), params.get("w", "int8"), params.get("acc"),
                         rows=_int_param(params, "rows", 4), cols=_int_param(params, "cols", 4),
                         length=_int_param(params, "length", 1024),
                         dataflow=params.get("dataflow", "ws"),
                         packing=params.get("packing", "auto"), out=params.get("out"))


@dataclass(frozen=True)
class DesignKind:
    keys: tuple
    build: Callable
    summary: str
    testbench: str


KINDS = {
    "mac": DesignKind(("a", "w", "acc", "length", "stages"), _build_mac,
                      "integer multiply-accumulate PE (a, w: int/uint formats; acc: exact "
                      "for `length` sums when omitted; stages: pipeline depth)",
                      "forma.sim.tb_mac"),
    "array": DesignKind(("rows", "cols", "a", "w", "acc", "length", "dataflow", "packing",
                         "out"),
                        _build_array,
                        "systolic array of MACs (rows, cols; a, w: int/uint formats, or "
                        "minifloat/posit formats summed exactly; acc: exact for `length` sums "
                        "when omitted; dataflow: ws or os; packing: auto, off or products per "
                        "multiplier; out: minifloat/posit format results are rounded to once; a, w: MX "
                        "block formats (mxfp8_e4m3, mxfp4, ...) build an output-stationary array "
                        "of MX block dots summed in out, default float32)",
                        "forma.sim.tb_array"),
}

DEFAULT_DESIGN = "mac a=int8 w=int8 stages=2"


def spec_of(words) -> DesignSpec:
    """Parse and check design-spec words (a string or list) against the known kinds."""
    return parse_spec(words, {name: kind.keys for name, kind in KINDS.items()})


def elaborate(spec):
    """The Amaranth component for a spec (DesignSpec or its words); parameters are validated."""
    spec = spec if isinstance(spec, DesignSpec) else spec_of(spec)
    return KINDS[spec.kind].build(dict(spec.params))


def parameters_of(spec):
    """The component for a spec, built only to read its parameters (rows, formats, packing):
    marked so that Amaranth does not warn that it was never elaborated."""
    component = elaborate(spec)
    component._MustUse__silence = True
    return component


def to_verilog(component, name="top"):
    """Verilog text for a component; deterministic (no source paths, same spec → same bytes).
    Amaranth writes it with the first Yosys it finds, so the tool environment is set first:
    every entry point (the forma command, make, the tests) then uses the same Yosys."""
    toolenv.apply()
    return verilog.convert(component, name=name, emit_src=False)


def cocotb_module_for(spec):
    """The cocotb testbench module for a spec (DesignSpec or its words)."""
    spec = spec if isinstance(spec, DesignSpec) else spec_of(spec)
    if spec.kind == "array" and _names_mx(dict(spec.params)):
        return "forma.sim.tb_mx_array"
    return KINDS[spec.kind].testbench
