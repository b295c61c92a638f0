"""The `forma` command: generate Verilog, simulate against the reference, build for a board.

Every user error is one sentence on stderr and a non-zero exit; outputs are written only on success.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from .errors import FormaError, SpecError

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
    from .generators import elaborate, spec_of, to_verilog
    from .generators.designs import cocotb_module_for
    from .sim.runner import run_cocotb, cocotb_env
    spec = spec_of(args.spec)
    verilog = to_verilog(elaborate(spec))
    build = Path(args.build or Path("build") / "sim" / spec.slug)
    result = run_cocotb(verilog, cocotb_module_for(spec), build,
                        cocotb_env(spec, args.seed, args.vectors))
    verdict = "PASS" if result["failed"] == 0 else "FAIL"
    print(f"{verdict}: {spec.text}: {args.vectors} vectors, seed {args.seed} (log: {result['log']})")
    if result["failed"]:
        print(f"reproduce: forma sim {spec.text} --seed {args.seed} --vectors {args.vectors}")
        if result["waves"]:
            print(f"waveform: {result['waves']}")
        return 1
    return 0


def _carry_bits_arg(parser):
    parser.add_argument("--carry-bits", type=int,
                        help="posit mac: the quire's carry bits (default 30); a narrow quire "
                             "lets a regression reach its limits")


def _case_and_build(args, folder):
    """The verification case an op command names and its build folder (--build or
    build/<folder>/<op-formats>/stages<P>)."""
    from .sim.cases import Case
    case = Case.parse(args.op, args.formats, out=args.out_format, stages=args.stages,
                      saturate=args.saturate, carry_bits=args.carry_bits)
    slug = "-".join([args.op, *args.formats] + ([args.out_format] if args.out_format else [])
                    + ([] if args.carry_bits is None else [f"carry{args.carry_bits}"]))
    build = Path(args.build or Path("build") / folder / "".join(
        c if c.isalnum() or c in "._-" else "_" for c in slug) / f"stages{args.stages}")
    return case, build


def cmd_verify(args):
    from .sim.verify import verify
    case, build = _case_and_build(args, "verify")
    verdict = verify(case, build, exhaustive=True if args.exhaustive else None,
                     vectors=args.vectors, seed=args.seed, lanes=args.lanes, stall=args.stall)
    for line in verdict.first:
        print(f"mismatch: {line}")
    if verdict.mismatches:
        words = ["forma verify", args.op, *args.formats]
        words += [f"--out {args.out_format}"] if args.out_format else []
        words += ["--exhaustive"] if verdict.mode == "exhaustive" else [f"--vectors {args.vectors}"]
        words += [f"--seed {args.seed}"] if verdict.mode == "random" or case.exhaustive_seeded else []
        words += [f"--stages {args.stages}"] + (["--stall"] if args.stall else [])
        words += [] if args.carry_bits is None else [f"--carry-bits {args.carry_bits}"]
        print("reproduce: " + " ".join(f"'{w}'" if "(" in w else w for w in words))
        if verdict.waves:
            print(f"waveform: {verdict.waves}")
    print(f"{verdict.rate / 1e6:.2f}M vectors/s in simulation; "
          f"{verdict.seconds['simulate']:.1f} s with the Verilator build", file=sys.stderr)
    print(verdict.summary)
    return 1 if verdict.mismatches else 0


def cmd_mutate(args):
    proof = {} if args.proof_seconds is None else {"proof_seconds": args.proof_seconds}
    # A design spec: an array, or an integer MAC by its key=value words (`mac FMT` is the PE).
    if args.op == "array" or (args.op == "mac" and any("=" in w for w in args.formats)):
        from .sim.mutate_design import mutate_design, regression_size
        from .generators import spec_of
        if args.carry_bits is not None:
            raise SpecError(f"--carry-bits applies to the posit mac PE (`forma mutate mac "
                            f"'posit(8,0)' --carry-bits N`), not to the {args.op} design")
        spec = spec_of([args.op, *args.formats])
        build = Path(args.build or Path("build") / "mutate" / spec.slug)
        report = mutate_design(spec.text, build, mutants=args.mutants, seed=args.seed,
                               count=args.vectors, **proof)
        regression = f"about {report.vectors} {regression_size(spec.kind)[1]} per pass"
    else:
        from .sim.mutate import mutate
        case, build = _case_and_build(args, "mutate")
        report = mutate(case, build, mutants=args.mutants, seed=args.seed,
                        vectors=1_000_000 if args.vectors is None else args.vectors,
                        lanes=args.lanes, **proof)
        regression = f"{report.vectors} vectors"
    for outcome in report.holes:
        print(f"survivor {outcome.mutation.number}: {outcome.mutation.command}  # {outcome.detail}")
    print(f"regression: {regression} ({report.mode}"
          f"{'' if report.mode == 'exhaustive' else f', seed {report.seed}'}); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()), file=sys.stderr)
    print(report.summary)
    return 1 if report.holes else 0


def _export_options(args):
    from .generators.backends import ExportOptions
    return ExportOptions(board=args.board, out=args.out, target_mhz=args.target_mhz, ii=args.ii,
                         max_luts=getattr(args, "max_luts", None),
                         max_dsps=getattr(args, "max_dsps", None), hls_backend=args.hls_backend,
                         io_type=args.io_type, test=getattr(args, "test", None))


def cmd_export(args):
    from .generators.backends import backend_module
    backend = backend_module(args.backend)
    report = backend.export(args.model, _export_options(args))
    out = Path(report.get("out") or Path(report["project"]).parent)
    print((out / "report.md").read_text())
    return 0


def cmd_run(args):
    import numpy as np
    from .generators.backends import backend_module, load_inputs
    backend = backend_module(args.backend)
    x, _ = load_inputs(args.inputs)
    y = backend.run(args.model, x, _export_options(args))
    path = Path(args.outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(y, dtype=np.float32))
    print(f"wrote {path} ({len(y)} rows, {args.backend})", file=sys.stderr)
    return 0


def _backend_args(p, board_default):
    p.add_argument("model", help="QONNX model (.onnx)")
    p.add_argument("--backend", choices=["native", "hls4ml"], default="native",
                   help="native (generated MAC arrays) or hls4ml (HLS project); default native")
    p.add_argument("--board", default=board_default, help="board name (see `forma boards`)")
    p.add_argument("--out", help="output folder (default: under build/)")
    p.add_argument("--target-mhz", type=float, help="clock target (default: the board's)")
    p.add_argument("--ii", type=int, default=1,
                   help="initiation interval in cycles (hls4ml: reuse factor); default 1")
    p.add_argument("--hls-backend", default="Vitis", choices=["Vitis", "Vivado", "Catapult"],
                   help="hls4ml backend (default Vitis)")
    p.add_argument("--io-type", default="io_parallel", choices=["io_parallel", "io_stream"],
                   help="hls4ml io type (default io_parallel)")


BENCHES = {"reference": "forma.sim.bench_reference", "pe": "forma.sim.bench_pe",
           "simd": "forma.sim.bench_simd", "array": "forma.sim.bench_array",
           "export": "forma.sim.bench_export"}


def cmd_bench(args):
    import importlib
    names = list(BENCHES) if args.name == "all" else [args.name]
    for name in names:
        print(f"== bench {name}", flush=True)
        importlib.import_module(BENCHES[name]).main(args.rest)
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
    p = sub.add_parser(
        "verify", help="prove a PE bit-exact against the reference on Verilator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="ops: mul, add, fma (one rounding of a*b, a+b, a*b+c); convert SOURCE DESTINATION;\n"
               "  mac A [B]: the exact-accumulator MAC (float/int/fixed: Kulisch FloatMAC with\n"
               "  emit=every; posit: the quire MAC), every beat's rounded running sum checked;\n"
               "  dot MX: the MX block dot-product PE (k elements and two E8M0 scales per beat);\n"
               "  simd MODE... (or simd default): the SIMD multiplier with those lane formats,\n"
               "  lanes of <= 8 bits exhaustive, 16-bit modes corners + --vectors random pairs.\n"
               "exhaustive: every input combination; for mac every (a, b) code pair appears once as\n"
               "  a product, in seeded order with `last` at seeded places (streams of 1..64 beats,\n"
               "  plus runs of max/min products as long as the accumulator bound); for dot the\n"
               "  element-pair sweep: every element pair stands in every block position, at scales\n"
               "  keeping sums mid-range, then every scale corner (0, 1, 2, 126..128, 253, 254,\n"
               "  255 = NaN) and scales putting sums on the output's overflow/normal/subnormal\n"
               "  edges. It is the default when there are at most 2**16 operand pairs.")
    p.add_argument("op", help="mul, add, fma, convert, mac, dot or simd")
    p.add_argument("formats", nargs="+", help="operand format(s), e.g. posit(8,0) or "
                   "float8_e4m3fn float8_e5m2; convert takes SOURCE DESTINATION; dot one MX "
                   "format (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8)")
    p.add_argument("--out", dest="out_format",
                   help="result format (default: the first operand's; dot: float32)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exhaustive", action="store_true",
                      help="every input combination, or the sweep described below (default "
                           "when there are at most 2**16 operand pairs)")
    mode.add_argument("--vectors", type=int, default=1_000_000,
                      help="seeded random vectors after the corner classes (default 1000000); "
                           "a vector is a beat for mac and a block pair for dot")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--stages", type=int, default=1, help="pipeline depth (default: 1)")
    p.add_argument("--lanes", type=int,
                   help="parallel PE copies in the checker (default: 8; dot: 2)")
    p.add_argument("--stall", action="store_true", help="random output back-pressure and input gaps")
    p.add_argument("--saturate", action="store_true", help="convert: saturating conversion")
    _carry_bits_arg(p)
    p.add_argument("--build", help="build folder (default: build/verify/...)")
    p.set_defaults(run=cmd_verify)
    p = sub.add_parser("mutate", help="mutation-test a PE's, an array's or an integer MAC's "
                                      "regression with Yosys `mutate`")
    p.add_argument("op", help="mul, add, fma, convert, mac, dot, simd (a PE by its formats), or a "
                              "design kind, array or mac, with its key=value words (then the "
                              "design's own cocotb regression runs)")
    p.add_argument("formats", nargs="+", help="operand format(s) as for `forma verify`")
    p.add_argument("--out", dest="out_format", help="result format (default: the first operand's)")
    p.add_argument("--mutants", type=int, default=50, help="mutants to sample (default: 50)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the mutant sample and of random stimulus (default: 1)")
    p.add_argument("--vectors", type=int,
                   help="random vectors when the input space exceeds 2**16 (default 1000000); "
                        "designs: output elements per pass of an array (default 600), "
                        "inputs per pass of a mac (default 3000)")
    p.add_argument("--stages", type=int, default=1, help="pipeline depth (default: 1)")
    p.add_argument("--lanes", type=int,
                   help="parallel PE copies in the checker (default: the PE's, at most 4)")
    p.add_argument("--saturate", action="store_true", help="convert: saturating conversion")
    _carry_bits_arg(p)
    p.add_argument("--proof-seconds", type=int,
                   help="wall-clock limit of each equivalence proof script (default: 120); a "
                        "survivor whose proofs run out of time is reported unproven")
    p.add_argument("--build", help="build folder (default: build/mutate/...)")
    p.set_defaults(run=cmd_mutate)
    p = sub.add_parser("export", help="QONNX model -> design for a board + exactness report")
    _backend_args(p, "ulx3s-85f")
    p.add_argument("--max-luts", type=int, help="LUT budget for folding (native backend)")
    p.add_argument("--max-dsps", type=int, help="DSP budget for folding (native backend)")
    p.add_argument("--test", help="test inputs (.npz with x[, y] or .npy) for the exactness check")
    p.set_defaults(run=cmd_export)
    p = sub.add_parser("run", help="run a QONNX model's generated design on inputs (simulation)")
    _backend_args(p, "pynq-z2")
    p.add_argument("--inputs", required=True, help="inputs (.npy, or .npz with x)")
    p.add_argument("--outputs", required=True, help="output .npy (float32, model output scale)")
    p.set_defaults(run=cmd_run)
    p = sub.add_parser("bench", help="speed and size benchmarks (tables + JSON under build/bench)")
    p.add_argument("name", choices=["all", *BENCHES], help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    p.set_defaults(run=cmd_bench)
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
