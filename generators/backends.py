"""What `forma export` and `forma run` share across backends: options, dispatch, test data, verdicts.

A backend is a module `forma.generators.<name>` with `export(model, options)` and `run(model, x, options)`.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from forma.errors import FormaError

#: --backend value -> module in forma.generators
BACKEND_MODULES = {"native": "native", "hls4ml": "hls4ml_backend"}
HLS_BACKENDS = ("Vitis", "Vivado", "Catapult")
IO_TYPES = ("io_parallel", "io_stream")


@dataclass
class ExportOptions:
    """Options of `forma export`/`forma run`; folding options are shared by every backend.

    target_mhz: clock target (MHz); ii: initiation interval in cycles (hls4ml: reuse factor);
    max_luts/max_dsps: resource caps (native backend); test: .npz (x, optional y) or .npy inputs
    for the exactness check (default: digits_test.npz beside the model, else random grid inputs).
    """
    board: str = "pynq-z2"
    out: str | None = None
    target_mhz: float | None = None
    ii: int = 1
    max_luts: int | None = None
    max_dsps: int | None = None
    hls_backend: str = "Vitis"
    io_type: str = "io_parallel"
    test: str | None = None
    seed: int = 1

    def as_dict(self):
        return asdict(self)


def backend_module(name: str):
    """The module implementing backend `name` (FormaError if unknown)."""
    if name not in BACKEND_MODULES:
        raise FormaError(f"unknown backend '{name}'; use one of {', '.join(BACKEND_MODULES)}")
    return importlib.import_module(f"forma.generators.{BACKEND_MODULES[name]}")


def load_inputs(path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from a .npy (inputs) or .npz (x, optional y) file, x as float32."""
    path = Path(path)
    if not path.is_file():
        raise FormaError(f"input file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:
        raise FormaError(f"{path} is not a .npy/.npz array file ({type(error).__name__})") from None
    if isinstance(data, np.ndarray):
        return data.astype(np.float32), None
    if "x" not in data:
        raise FormaError(f"{path} has no array 'x' (found {', '.join(data.files)})")
    return data["x"].astype(np.float32), (data["y"] if "y" in data else None)


def test_inputs(model_path, network, options) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs for the exactness check: options.test, digits_test.npz beside the model, or 256
    seeded random rows on the input quantizer's grid (every code equally likely)."""
    if options.test:
        return (*load_inputs(options.test), str(options.test))
    beside = Path(model_path).with_name("digits_test.npz") if isinstance(model_path, (str, Path)) \
        else None
    size = int(np.prod(network.input_shape[1:]))
    if beside is not None and beside.is_file():
        x, y = load_inputs(beside)
        if x[0].size == size:
            return x, y, str(beside)
    fmt = network.layers[0].output.format
    rng = np.random.default_rng(options.seed)
    codes = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=(256, size))
    return (codes * fmt.lsb).astype(np.float32), None, f"256 random inputs on the {fmt.name} grid"


def verdict(reference: np.ndarray, result: np.ndarray, labels=None) -> dict:
    """Value-for-value comparison of two float32 output batches (every bit of every value, with
    -0.0 == 0.0), plus accuracy when labels exist."""
    ref = np.asarray(reference, np.float32).reshape(len(reference), -1)
    got = np.asarray(result, np.float32).reshape(len(result), -1)
    if ref.shape != got.shape:
        raise FormaError(f"output shapes differ: reference {ref.shape}, backend {got.shape}")
    # equal float32 values; QONNX's -0.0 (round(-0.3) * scale) equals fixed point's only zero
    bad = np.flatnonzero(np.any((ref != got) | (np.isnan(ref) != np.isnan(got)), axis=1))
    out = dict(rows=len(ref), exact=bool(bad.size == 0), mismatching_rows=int(bad.size))
    if bad.size:
        i = int(bad[0])
        out["first_mismatch"] = dict(row=i, reference=ref[i].tolist(), backend=got[i].tolist())
    if labels is not None:
        out["accuracy_reference"] = float(np.mean(ref.argmax(1) == labels))
        out["accuracy_backend"] = float(np.mean(got.argmax(1) == labels))
    return out


def write_report(out_dir: Path, report: dict, markdown: str):
    """report.json (sorted keys, deterministic) and report.md in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.md").write_text(markdown)


def export_atomically(out: Path, make):
    """Run make(work) in a fresh sibling folder of `out` that replaces `out` only if it returns;
    on a FormaError the folder becomes `<out>.failed` (paths in the message follow it) and `out`
    is untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = out.with_name(out.name + ".failed")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
    try:
        result = make(work)
    except FormaError as error:
        shutil.rmtree(failed, ignore_errors=True)
        work.rename(failed)
        raise type(error)(str(error).replace(str(work), str(failed))) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _replace(work, out)
    shutil.rmtree(failed, ignore_errors=True)
    return result


def _replace(src: Path, dst: Path):
    """Move folder `src` onto `dst`, removing the previous `dst` only once `src` is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
