"""Benchmark of the SIMD multiplier against separate single-format multipliers: real board builds.

For the SIMD PE (its three float/posit modes, and all five default modes) and for banks of
single-format PEs filling the same 16-bit word (FP4 x4, posit(8,0) x2, posit(16,1) x1, int8 x2,
int4 x4), at the same pipeline depth: cells (LUT4, CCU2C, FF, DSP), LUTs and Fmax.
"""
import argparse
import json
import sys
from pathlib import Path

from amaranth import Cat, Module, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..boards import synthesize
from ..errors import BuildError, SpecError
from ..hdl.float_pe import FloatMultiplier, Pipeline, check_stages
from ..hdl.posit_pe import PositMultiplier
from ..hdl.simd_pe import DEFAULT_MODES, WORD, SIMDMultiplier
from .formats import parse_format

BOARD = "ulx3s-85f"
STAGES = 3
# The designs compared: (name, factory of stages). Sums of rows are added as extra rows.
SIMD_3 = ("float4_e2m1fn", "posit(8,0)", "posit(16,1)")
SEPARATE_3 = ("fp4 x4", "posit8 x2", "posit16 x1")
SEPARATE_5 = SEPARATE_3 + ("int8 x2", "int4 x4")
CELL_TYPES = ("LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_FF", "MULT18X18D")


class IntMultiplier(wiring.Component):
    """o = a x b exact (2 x bits wide, two's complement for signed formats) of one integer format.

    Payload {a, b}; stages 1..3 (registers after: output, product, operands), the SIMD PE's cuts.
    """

    CUTS = ("product", "decoded")

    def __init__(self, fmt, *, stages=1):
        self.format = parse_format(fmt) if isinstance(fmt, str) else fmt
        if self.format.family != "int":
            raise SpecError(f"fmt={self.format.name}: IntMultiplier takes an intN or uintN format")
        self.latency = self.stages = check_stages(stages, self.CUTS)
        bits = self.format.bits
        super().__init__({"i": In(stream.Signature(data.StructLayout({"a": bits, "b": bits}))),
                          "o": Out(stream.Signature(2 * bits))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        pipe = Pipeline(m, advance, self.i.valid, self.CUTS[:self.stages - 1])
        a, b = self.i.payload.a, self.i.payload.b
        if self.format.signed:
            a, b = a.as_signed(), b.as_signed()
        a, b = pipe.cut("decoded", a, b)
        (product,) = pipe.cut("product", a * b)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(pipe.valid), self.o.payload.eq(product)]
        return m


class LaneBank(wiring.Component):
    """WORD // lane_bits copies of a single-format PE over 16-bit operand words, lane l on bits
    [w*l, w*(l+1)), results concatenated: the separate-PE counterpart of one SIMD mode."""

    def __init__(self, make_pe, lane_bits):
        self.pes = [make_pe() for _ in range(WORD // lane_bits)]
        self.lane_bits = lane_bits
        self.latency = self.pes[0].latency
        out = sum(len(Value.cast(pe.o.payload)) for pe in self.pes)
        super().__init__({"i": In(stream.Signature(data.StructLayout({"a": WORD, "b": WORD}))),
                          "o": Out(stream.Signature(out))})

    def elaborate(self, platform):
        m = Module()
        w = self.lane_bits
        for lane, pe in enumerate(self.pes):   # identical PEs: they stall and fill together
            m.submodules[f"lane{lane}"] = pe
            m.d.comb += [pe.i.valid.eq(self.i.valid), pe.o.ready.eq(self.o.ready),
                         pe.i.payload.a.eq(self.i.payload.a[w * lane:w * (lane + 1)]),
                         pe.i.payload.b.eq(self.i.payload.b[w * lane:w * (lane + 1)])]
        m.d.comb += [self.i.ready.eq(self.pes[0].i.ready), self.o.valid.eq(self.pes[0].o.valid),
                     self.o.payload.eq(Cat(pe.o.payload for pe in self.pes))]
        return m


def designs(stages):
    """name -> (factory of the component, its spec text for the report)."""
    return {
        "SIMD 3 modes": (lambda: SIMDMultiplier(SIMD_3, stages=stages),
                         f"simd modes={','.join(SIMD_3)} stages={stages}"),
        "SIMD 5 modes": (lambda: SIMDMultiplier(DEFAULT_MODES, stages=stages),
                         f"simd modes={','.join(DEFAULT_MODES)} stages={stages}"),
        "fp4 x4": (lambda: LaneBank(lambda: FloatMultiplier("float4_e2m1fn", stages=stages), 4),
                   f"4 x FloatMultiplier(float4_e2m1fn) stages={stages}"),
        "posit8 x2": (lambda: LaneBank(lambda: PositMultiplier("posit(8,0)", stages=stages), 8),
                      f"2 x PositMultiplier(posit(8,0)) stages={stages}"),
        "posit16 x1": (lambda: LaneBank(lambda: PositMultiplier("posit(16,1)", stages=stages), 16),
                       f"1 x PositMultiplier(posit(16,1)) stages={stages}"),
        "int8 x2": (lambda: LaneBank(lambda: IntMultiplier("int8", stages=stages), 8),
                    f"2 x IntMultiplier(int8) stages={stages}"),
        "int4 x4": (lambda: LaneBank(lambda: IntMultiplier("int4", stages=stages), 4),
                    f"4 x IntMultiplier(int4) stages={stages}"),
    }


def build_row(name, factory, spec, board, out_dir):
    """One row: the block's cells of interest, resources and Fmax from a full build."""
    try:
        report = synthesize(factory, board, out_dir, design=spec)
    except BuildError as error:
        return {"name": name, "spec": spec, "board": board, "built": False, "error": str(error)}
    cells = report["cells"]
    return {"name": name, "spec": spec, "board": board, "built": True,
            **{cell: cells.get(cell, 0) for cell in CELL_TYPES},
            "luts": report["luts"], "ffs": report["ffs"], "dsps": report["dsps"],
            "fmax_mhz": report["fmax_mhz"], "seconds": report["seconds"]["total"]}


def summed(name, rows):
    """A row adding up the cells of `rows` (separate PEs side by side); Fmax is their minimum."""
    if not rows or not all(r["built"] for r in rows):
        return None
    keys = (*CELL_TYPES, "luts", "ffs", "dsps")
    return {"name": name, "spec": " + ".join(r["name"] for r in rows), "board": rows[0]["board"],
            "built": True, **{k: sum(r[k] for r in rows) for k in keys},
            "fmax_mhz": min(r["fmax_mhz"] for r in rows), "sum": True}


def with_sums(rows):
    """The built rows plus the sums of the separate banks the two SIMD PEs replace."""
    by_name = {r["name"]: r for r in rows}
    extra = []
    for label, names in (("separate, 3 formats", SEPARATE_3), ("separate, 5 formats", SEPARATE_5)):
        if all(n in by_name for n in names):
            row = summed(label, [by_name[n] for n in names])
            if row:
                extra.append(row)
    return rows + extra


def table(rows, stages):
    """The figures as a Markdown table (sum rows: Fmax is the slowest bank's)."""
    head = ("| design | LUT4 | CCU2C | PFUMX | L6MUX21 | FF | MULT18X18D | LUTs (LUT4 + 2 CCU2C) "
            "| Fmax MHz |")
    lines = [f"ULX3S-85F (LFE5U-85F), stages={stages}, block cells only (harness excluded)",
             "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if not r["built"]:
            lines.append(f"| {r['name']} | build failed: {r['error']} ||||||||")
            continue
        fmax = f"{r['fmax_mhz']:.1f}" + (" (min)" if r.get("sum") else "")
        lines.append(f"| {r['name']} | {r['LUT4']} | {r['CCU2C']} | {r['PFUMX']} | {r['L6MUX21']} | "
                     f"{r['TRELLIS_FF']} | {r['MULT18X18D']} | {r['luts']} | {fmax} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=STAGES)
    parser.add_argument("--board", default=BOARD)
    parser.add_argument("--only", nargs="+", help="build only these designs (by name)")
    parser.add_argument("--out", default="build/bench")
    args = parser.parse_args(argv)
    out = Path(args.out)
    every = designs(args.stages)
    names = args.only or list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SpecError(f"--only {unknown[0]!r}: choose among {', '.join(every)}")
    rows = []
    for name in names:
        factory, spec = every[name]
        print(f"[bench simd] {args.board}: {spec}", file=sys.stderr, flush=True)
        slug = name.replace(" ", "_")
        rows.append(build_row(name, factory, spec, args.board,
                              out / "simd" / f"{args.board}-s{args.stages}" / slug))
    rows = with_sums(rows)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"simd_s{args.stages}.json"
    path.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.stages))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
