"""Runs a cocotb testbench on Verilator against the Verilog Amaranth emits for a component.

One entry point, `run_cocotb`; a failing run is rebuilt with VCD tracing so its waveform is kept
(FST needs lz4 headers, which a fresh machine lacks).
"""
import os
from pathlib import Path

from .. import toolenv

VERILATOR_ARGS = ["-Wno-fatal", "-Wno-PROCASSINIT", "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND",
                  "-Wno-DECLFILENAME", "-Wno-WIDTHTRUNC", "-O3"]


def _write_if_changed(path: Path, text: str):
    """Keep the file's timestamp when its text is unchanged, so Verilator can reuse its build."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# Verilog timing controls (a clock generated inside the design) need C++ coroutines.
TIMING_ARGS = ["--timing", "-CFLAGS", "-fcoroutines"]


def _build_and_test(verilog_path, test_module, build_dir, env, waves, timing):
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    log = build_dir / "build.log"
    extra = (["--trace-vcd"] if waves else []) + (TIMING_ARGS if timing else [])
    runner.build(sources=[verilog_path], hdl_toplevel="top", build_dir=build_dir,
                 build_args=VERILATOR_ARGS + extra, waves=waves, log_file=log)
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel="top", build_dir=build_dir,
                    test_dir=build_dir, extra_env=env, waves=waves, results_xml=str(results),
                    log_file=build_dir / "sim.log")
    except SystemExit:  # cocotb's runner exits on failing tests outside its own pytest plugin
        pass
    return get_results(results) if results.exists() else (0, 1)  # no results: the run crashed


def run_cocotb(verilog: str, test_module: str, build_dir, env: dict, timing=False) -> dict:
    """Simulate `verilog` (top module `top`) with cocotb module `test_module` on Verilator.

    env: variables the testbench reads (spec, seed, vector count); timing: the Verilog has
    timing controls (e.g. generates its own clock). Returns
    {"tests", "failed", "log", "waves"}: waves is the VCD path for a failing run, else None.
    """
    toolenv.apply()
    toolenv.require("verilator")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog_path = build_dir / "top.v"
    _write_if_changed(verilog_path, verilog)
    env = {k: str(v) for k, v in env.items()}
    tests, failed = _build_and_test(verilog_path, test_module, build_dir, env, False, timing)
    waves = None
    if failed and not os.environ.get("FORMA_NO_WAVES"):
        wave_dir = build_dir.with_name(build_dir.name + "-waves")  # not inside: make's VPATH
        wave_dir.mkdir(exist_ok=True)
        _build_and_test(verilog_path, test_module, wave_dir, env, True, timing)
        found = sorted(wave_dir.glob("*.vcd"))
        waves = str(found[0]) if found else None
    return {"tests": tests, "failed": failed, "log": str(build_dir / "sim.log"), "waves": waves}


def cocotb_env(spec, seed: int, vectors: int) -> dict:
    """The variables a forma testbench reads (see `cocotb_config`)."""
    return {"FORMA_SPEC": str(spec), "FORMA_SEED": seed, "FORMA_VECTORS": vectors}


def cocotb_config():
    """(spec text, seed, vector count) inside a running testbench."""
    return (os.environ["FORMA_SPEC"], int(os.environ["FORMA_SEED"]),
            int(os.environ["FORMA_VECTORS"]))


def mutation_env(mutants: int, results) -> dict:
    """The variables that make a design's testbench run its regression once per mutant of a
    mutant netlist and write the outcomes to `results` (see `mutation_config`)."""
    return {"FORMA_MUTANTS": mutants, "FORMA_MUTATION_RESULTS": str(results)}


def mutation_config():
    """(mutant count, results path) inside a testbench run by `mutation_env`, else None."""
    if not os.environ.get("FORMA_MUTANTS"):
        return None
    return int(os.environ["FORMA_MUTANTS"]), os.environ["FORMA_MUTATION_RESULTS"]
