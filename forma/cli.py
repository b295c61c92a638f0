"""The `forma` command: generate Verilog, simulate against the reference, build for a board.

Every user error is one sentence on stderr and a non-zero exit; outputs are written only on success.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from .errors import FormaError

SPEC_HELP = "design spec: a kind and key=value words, e.g. mac a=int8 w=int4 acc=int24 stages=2"


def write_atomically(path: Path, text: str):
    """Write via a temporary sibling and rename, so a failure never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def cmd_generate(args):
    from .generators import elaborate, spec_of, to_verilog
    spec = spec_of(args.spec)
    text = to_verilog(elaborate(spec))
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.output), text)
        print(f"wrote {args.output} ({spec.text})", file=sys.stderr)


def cmd_synth(args):
    from .boards import get_board, synthesize
    from .generators import DEFAULT_DESIGN, elaborate, spec_of
    board = get_board(args.board)
    spec = spec_of(args.spec or DEFAULT_DESIGN)
    block = elaborate(spec)  # validate parameters before any tool runs
    out = Path(args.out or Path("build") / board.name / spec.slug)
    report = synthesize(block, board, out, design=spec.text, target_mhz=args.target_mhz,
                        seed=args.seed)
    print((out / "report.md").read_text())
    return 0 if report.get("timing_met", True) or not args.require_timing else 1


def cmd_boards(args):
    from .boards import BOARDS
    for board in BOARDS.values():
        res = ", ".join(f"{v} {k}" for k, v in board.resources.items())
        kind = "bitstream" if board.bitstream else "estimate"
        print(f"{board.name:12s} {board.device:24s} {kind:9s} {res}")


def cmd_sim(args):
    from .generators import KINDS, elaborate, spec_of, to_verilog
    from .sim.runner import run_cocotb, cocotb_env
    spec = spec_of(args.spec)
    verilog = to_verilog(elaborate(spec))
    build = Path(args.build or Path("build") / "sim" / spec.slug)
    result = run_cocotb(verilog, KINDS[spec.kind].testbench, build,
                        cocotb_env(spec, args.seed, args.vectors))
    verdict = "PASS" if result["failed"] == 0 else "FAIL"
    print(f"{verdict}: {spec.text}: {args.vectors} vectors, seed {args.seed} (log: {result['log']})")
    if result["failed"]:
        print(f"reproduce: forma sim {spec.text} --seed {args.seed} --vectors {args.vectors}")
        if result["waves"]:
            print(f"waveform: {result['waves']}")
        return 1
    return 0


def parser():
    top = argparse.ArgumentParser(prog="forma", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write Verilog for a design spec")
    p.add_argument("spec", nargs="+", help=SPEC_HELP)
    p.add_argument("-o", "--output", help="output .v file (default: stdout)")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("synth", help="synthesize, place and route a design for a board")
    p.add_argument("--board", default="ulx3s-85f", help="board name (see `forma boards`)")
    p.add_argument("spec", nargs="*", help=SPEC_HELP + " (default: the default design)")
    p.add_argument("--out", help="output folder (default: build/<board>/<design>)")
    p.add_argument("--target-mhz", type=float, help="clock target (default: the board's)")
    p.add_argument("--seed", type=int, default=1, help="place-and-route seed (default: 1)")
    p.add_argument("--require-timing", action="store_true",
                   help="exit non-zero when the clock target is missed")
    p.set_defaults(run=cmd_synth)

    p = sub.add_parser("boards", help="list the known boards")
    p.set_defaults(run=cmd_boards)

    p = sub.add_parser("sim", help="check a design's Verilog against the reference on Verilator")
    p.add_argument("spec", nargs="+", help=SPEC_HELP)
    p.add_argument("--seed", type=int, default=1, help="stimulus seed (default: 1)")
    p.add_argument("--vectors", type=int, default=2000, help="vectors to run (default: 2000)")
    p.add_argument("--build", help="simulation build folder (default: build/sim/<design>)")
    p.set_defaults(run=cmd_sim)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except FormaError as error:
        print(f"forma: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forma: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
