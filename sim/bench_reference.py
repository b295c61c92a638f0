"""Throughput of the reference arithmetic: results/s for mul and add per format (median of runs).

`main()` prints a table and writes JSON (default build/bench_reference.json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from forma.sim.formats import parse_format

FORMATS = ["int8", "fixed<8,3,RND_CONV,SAT>", "float8_e4m3fn", "float8_e5m2", "float6_e2m3fn",
           "float4_e2m1fn", "float8_e8m0fnu", "posit(8,0)", "posit(8,2)", "int16", "float16",
           "bfloat16", "posit(16,1)", "float32", "posit(32,2)"]


def measure(name: str, op: str, n: int = 1 << 20, repeats: int = 5) -> float:
    """Median results/s of fmt.op on n random codes (tables built before timing)."""
    f = parse_format(name)
    rng = np.random.default_rng(1)
    codes = f.all_codes() if f.bits <= 16 else None
    pick = (lambda: rng.choice(codes, n)) if codes is not None else \
        (lambda: rng.integers(0, 1 << f.bits, n, dtype=np.uint64).astype(f.code_dtype))
    a, b = pick(), pick()
    getattr(f, op)(a[:16], b[:16])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        getattr(f, op)(a, b)
        times.append(time.perf_counter() - t0)
    return n / float(np.median(times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="build/bench_reference.json")
    p.add_argument("--n", type=int, default=1 << 20)
    p.add_argument("--project", type=float, default=0,
                   help="also print the seconds to check this many vectors per format/op")
    args = p.parse_args(argv)
    rows = {}
    print(f"{'format':28s} {'mul Mres/s':>12s} {'add Mres/s':>12s}")
    for name in FORMATS:
        r = {op: measure(name, op, args.n) for op in ("mul", "add")}
        rows[name] = r
        line = f"{name:28s} {r['mul'] / 1e6:12.1f} {r['add'] / 1e6:12.1f}"
        if args.project:
            line += f"   {args.project:.3g} vectors: {args.project / min(r.values()):.1f} s"
        print(line)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results_per_s": rows, "n": args.n}, indent=1))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
