"""Board build of a native design (UART host top, Yosys + nextpnr) in its own process group.

`forma export` starts it beside the Verilator check and stops it, tools included, if the check fails.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

from forma.errors import FormaError

BAUD = 115200


def build(specs, board_name, out_dir, design, target_mhz=None, seed=1):
    """Synthesize the network of `specs` for the board into out_dir (atomic, see `synthesize`):
    behind the UART host interface on open-flow boards, the LFSR harness on estimate-only parts.
    Returns (build report, board clock in Hz or None)."""
    from forma.boards import get_board, synthesize
    from forma.boards.harness import BLOCK_NAME
    from forma.hdl.dataflow import StreamNetwork
    from forma.hdl.uart import UartNetworkTop

    board = get_board(board_name)
    top = clock_hz = None
    if board.bitstream:
        clock_hz = board.platform().default_clk_frequency  # the oscillator, not the constraint
        top = lambda block: UartNetworkTop(block, clock_hz, BAUD, block_name=BLOCK_NAME)  # noqa: E731
    report = synthesize(lambda: StreamNetwork(specs), board, out_dir, design=design,
                        target_mhz=target_mhz, seed=seed, top=top)
    return report, clock_hz


class BoardBuild:
    """`build` running in a child process (its own session, so its tools stop with it)."""

    def __init__(self, specs, board_name, out_dir, design, target_mhz=None, seed=1):
        out_dir = Path(out_dir).resolve()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.job = out_dir.with_name(f".{out_dir.name}.job")
        self.result = out_dir.with_name(f".{out_dir.name}.result")
        self.job.write_bytes(pickle.dumps(
            dict(specs=specs, board_name=board_name, out_dir=out_dir, design=design,
                 target_mhz=target_mhz, seed=seed, result=self.result)))
        self.seconds = None  # the child's own wall time, once it has ended
        self.process = subprocess.Popen([sys.executable, "-m", __name__, str(self.job)],
                                        start_new_session=True, stdin=subprocess.DEVNULL)

    def wait(self):
        """(build report, board clock Hz or None) once the child ends; its FormaError re-raised."""
        code = self.process.wait()
        try:
            outcome = pickle.loads(self.result.read_bytes()) if self.result.exists() else None
        finally:
            self._clean()
        if outcome is None:
            raise FormaError(f"the board build process ended without a result (exit {code}); "
                             "its messages are above")
        if outcome[0] == "error":
            raise outcome[1](outcome[2])
        self.seconds = outcome[3]
        return outcome[1], outcome[2]

    def cancel(self):
        """Stop the child and every tool it started; no-op once it has ended."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._clean()

    def _clean(self):
        self.job.unlink(missing_ok=True)
        self.result.unlink(missing_ok=True)


def _child(job_path):
    started = time.monotonic()
    job = pickle.loads(Path(job_path).read_bytes())
    result = job.pop("result")
    try:
        outcome = ("ok", *build(**job), time.monotonic() - started)
    except FormaError as error:
        outcome = ("error", type(error), str(error))
    Path(result).write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    _child(sys.argv[1])
