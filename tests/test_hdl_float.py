"""Minifloat PEs against the reference on Verilator: exhaustive where the input space is <= 2**16
pairs, seeded random plus every corner class above that. Many PEs share one build (`Bundle`).

Reproduce one check with e.g. `pytest tests/test_hdl_float.py -k exhaustive_mul_add -m sim`;
FORMA_SEED changes the random vectors.
"""
import gc

import numpy as np
import pytest
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from forma.errors import SpecError
from forma.hdl.float_mac import FloatMAC, kulisch_width
from forma.hdl.float_pe import Converter, FloatAdder, FloatFMA, FloatMultiplier
from forma.sim.bulk import run_bulk
from forma.sim.cases import Case
from forma.sim.cases import corner_codes as case_corners
from forma.sim.verify import verify
from forma.sim.formats import FloatFormat, convert, dot, parse_format
from forma.sim.formats.minifloat import fma_round_to_odd

LANES = 1    # copies of a bundle simulated side by side (more lanes: faster runs, longer builds)


class Bundle(wiring.Component):
    """Same-latency PEs in one design, in groups: a group's PEs see the same input word
    (operand field k at bits [k*stride, ...)) and their outputs are concatenated (first PE in
    the LSBs); a selector above the fields picks the group. All PEs run in lockstep."""

    def __init__(self, groups, stride):
        self.groups, self.stride = groups, stride
        pes = [pe for group in groups for pe in group]
        self.latency = pes[0].latency
        assert all(pe.latency == self.latency for pe in pes)
        self.fields = max(len(list(data.Layout.cast(pe.i.payload.shape()))) for pe in pes)
        self.sel_bits = max(1, (len(groups) - 1).bit_length())
        self.in_width = self.fields * stride + self.sel_bits
        self.out_width = max(sum(pe.out_format.bits for pe in group) for group in groups)
        assert self.in_width <= 64 and self.out_width <= 64
        super().__init__({"i": In(stream.Signature(self.in_width)),
                          "o": Out(stream.Signature(self.out_width))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        word, stride = self.i.payload, self.stride
        sel = word[self.fields * stride:]
        outputs = []
        for g, group in enumerate(self.groups):
            for index, pe in enumerate(group):
                m.submodules[f"pe_{g}_{index}"] = pe
                m.d.comb += [pe.i.valid.eq(self.i.valid), pe.o.ready.eq(self.o.ready)]
                for slot, (name, field) in enumerate(data.Layout.cast(pe.i.payload.shape())):
                    m.d.comb += pe.i.payload[name].eq(word[slot * stride:slot * stride + field.width])
            outputs.append(Cat(*(pe.o.payload for pe in group)))
        for stage in range(self.latency):
            delayed = Signal.like(sel, name=f"sel_{stage}")
            with m.If(advance):
                m.d.sync += delayed.eq(sel)
            sel = delayed
        out = outputs[0]
        for g in range(1, len(outputs)):
            out = Mux(sel == g, outputs[g], out)
        first = self.groups[0][0]
        m.d.comb += [self.i.ready.eq(first.i.ready), self.o.valid.eq(first.o.valid),
                     self.o.payload.eq(out)]
        return m


class Padded(wiring.Component):
    """A PE behind `extra` input registers that move with its own stall rule: the pair acts as
    one PE of latency pe.latency + extra, so PEs of different depths share one Bundle."""

    def __init__(self, pe, extra):
        self.pe, self.extra = pe, extra
        self.latency, self.out_format = pe.latency + extra, pe.out_format
        super().__init__({"i": In(stream.Signature(pe.i.payload.shape())),
                          "o": Out(stream.Signature(pe.out_format.bits))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        advance = ~pe.o.valid | pe.o.ready
        valid, payload = self.i.valid, self.i.payload
        for stage in range(self.extra):
            next_valid, next_payload = Signal(name=f"pad_valid_{stage}"), Signal.like(payload)
            with m.If(advance):
                m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
            valid, payload = next_valid, next_payload
        m.d.comb += [self.i.ready.eq(advance), pe.i.valid.eq(valid), pe.i.payload.eq(payload),
                     self.o.valid.eq(pe.o.valid), self.o.payload.eq(pe.o.payload),
                     pe.o.ready.eq(self.o.ready)]
        return m


def padded(checks, latency):
    """Each check's PE padded to `latency` cycles."""
    return [(Padded(pe, latency - pe.latency), *rest) for pe, *rest in checks]


def fmt(name):
    return parse_format(name)


# --- references ----------------------------------------------------------------------------
def ref_mul(fa, fb, fo, a, b):
    """Same format: fmt.mul; mixed: a length-1 exact dot product (one rounding of a*b)."""
    if fa == fb == fo:
        return fa.mul(a, b)
    return dot(a[:, None], b[:, None], fa, fb, fo, accumulate="exact")


def ref_add(fa, fb, fo, a, b):
    """Same format: fmt.add; mixed: the float64 sum, asserted exact, encoded once."""
    if fa == fb == fo:
        return fa.add(a, b)
    va, vb = fa.decode(a), fb.decode(b)
    with np.errstate(all="ignore"):
        s = va + vb
        fin = np.isfinite(s)
        assert np.all((s[fin] - va[fin]) == vb[fin]), "mixed-format sum not exact in float64"
    return fo.encode(s)


def ref_fma(fa, fb, fc, fo, a, b, c):
    """Same format: fmt.fma; mixed: the exact product plus c rounded to odd, encoded once."""
    if fa == fb == fc == fo:
        return fa.fma(a, b, c)
    with np.errstate(all="ignore"):
        return fo.encode(fma_round_to_odd(fa.decode(a) * fb.decode(b), fc.decode(c)))


def encodable(src, dst, codes, saturate=None):
    """Codes of src whose conversion to dst the reference defines (no NaN into finite or fixed
    formats, no inf into wrapping fixed point)."""
    v = src.decode(codes)
    ok = np.ones(len(codes), dtype=bool)
    if dst.family in ("int", "fixed"):
        ok &= ~np.isnan(v)
        if dst.modes(None, saturate)[1] == "WRAP":
            ok &= ~np.isinf(v)
    elif isinstance(dst, FloatFormat) and not dst.has_nan:
        ok &= ~np.isnan(v)
    return codes[ok]


def show(f, code):
    return f"{int(code):#x} ({f.decode(np.array([code]))[0]!r})"


def run_groups(groups, stride, tmp_path, stall=False):
    """groups: [(operand code arrays, [(pe, label, formats, expected codes) per PE])].

    Builds one Bundle, checks every vector, and fails with the first mismatches in the formats'
    notation (formats: operand formats then the output format). Returns (vectors, rate).
    """
    bundle = Bundle([[check[0] for check in checks] for _, checks in groups], stride)
    words, wants, owners = [], [], []
    for g, (operands, checks) in enumerate(groups):
        size = len(operands[0])
        word = np.full(size, g, dtype=np.uint64) << np.uint64(bundle.fields * stride)
        for slot, codes in enumerate(operands):
            word |= np.asarray(codes, dtype=np.uint64) << np.uint64(slot * stride)
        want, offset = np.zeros(size, dtype=np.uint64), 0
        for pe, _, _, expected in checks:
            want |= np.asarray(expected, dtype=np.uint64) << np.uint64(offset)
            offset += pe.out_format.bits
        words.append(word)
        wants.append(want)
        owners.append(np.full(size, g))
    words, wants, owners = (np.concatenate(x) for x in (words, wants, owners))
    result = run_bulk(bundle, words, wants, bundle.in_width, bundle.out_width, tmp_path,
                      lanes=LANES, stall=stall)
    lines = []
    for index, got in result.first:
        offset = 0
        for pe, label, fmts, _ in groups[owners[index]][1]:
            mask = (1 << pe.out_format.bits) - 1
            g_code, w_code = (got >> offset) & mask, (int(wants[index]) >> offset) & mask
            offset += pe.out_format.bits
            if g_code != w_code:
                ops = [(int(words[index]) >> (slot * stride)) & ((1 << f.bits) - 1)
                       for slot, f in enumerate(fmts[:-1])]
                lines.append(f"{label}: " + ", ".join(show(f, c) for f, c in zip(fmts, ops)) +
                             f" -> want {show(fmts[-1], w_code)}, got {show(fmts[-1], g_code)}")
    assert result.mismatches == 0, f"{result.mismatches} mismatches; first:\n" + "\n".join(lines)
    return result.vectors, result.rate


def pairs8(fa, fb):
    """All 2**16 (a, b) pairs of 8-bit fields; narrower formats take the low bits of each, so
    every one of their pairs occurs too."""
    word = np.arange(1 << 16, dtype=np.int64)
    return word & 255, word >> 8


def binary_check(op, an, bn, on, a, b, stages=1):
    fa, fb, fo = fmt(an), fmt(bn), fmt(on)
    a, b = a & ((1 << fa.bits) - 1), b & ((1 << fb.bits) - 1)
    if op == "mul":
        pe, want = FloatMultiplier(fa, fb, fo, stages=stages), ref_mul(fa, fb, fo, a, b)
    else:
        pe, want = FloatAdder(fa, fb, fo, stages=stages), ref_add(fa, fb, fo, a, b)
    return pe, f"{op} {an} x {bn} -> {on} stages={stages}", (fa, fb, fo), want


# --- exhaustive binary ops: each group's outputs fill at most 64 bits ---------------------------
EXHAUSTIVE = [
    [(op,) + t for t in [("float8_e4m3fn",) * 3, ("float8_e5m2",) * 3, ("float8_e4m3b11fnuz",) * 3,
                         ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fn")] for op in ("mul", "add")],
    [(op,) + t for t in [("float6_e3m2fn",) * 3, ("float6_e2m3fn",) * 3, ("float4_e2m1fn",) * 3,
                         ("float8_e4m3_fn_nosub",) * 3] for op in ("mul", "add")] +
    [("mul", "float4_e2m1fn", "float8_e4m3fn", "float8_e4m3fn"),
     ("add", "float6_e2m3fn", "float8_e4m3fn", "float8_e5m2")],
]


@pytest.mark.sim
def test_exhaustive_mul_add(tmp_path):
    """Every operand pair of mul and add: fp8 (incl. a fnuz bias-11 and a _nosub format), fp6,
    fp4, and mixed pairs (e4m3fn x e5m2, fp4 x fp8, fp6 + fp8)."""
    a, b = pairs8(None, None)
    groups = [((a, b), [binary_check(*spec, a, b) for spec in group]) for group in EXHAUSTIVE]
    count, rate = run_groups(groups, 8, tmp_path)
    print(f"exhaustive mul/add: {sum(len(g) for g in EXHAUSTIVE)} PEs, {count} vectors, "
          f"{rate:.0f} vectors/s")


# --- conversions: all codes of each source ----------------------------------------------------
FP8 = ["float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn",
       "float8_e4m3b11fnuz"]
CONVERSIONS = [
    # 8-bit sources (groups of 8 results)
    [(s, d, None) for s in FP8[:3] for d in FP8 if s != d][:8],
    [(s, d, None) for s in FP8[:3] for d in FP8 if s != d][8:] +
    [("float8_e5m2", "float8_e4m3fn", True), ("float8_e4m3_fn_nosub", "float8_e5m2", None)],
    [(s, d, None) for s in FP8[3:] for d in FP8 if s != d][:8],
    [(s, d, None) for s in FP8[3:] for d in FP8 if s != d][8:] +
    [("float8_e4m3fn", "fixed<8,4,TRN,WRAP>", None)],
    [(s, "int8", None) for s in FP8] + [("float8_e5m2", "uint8", None),
                                        ("float8_e5m2", "int8_narrow", None)],
    [(s, "fixed<8,4,RND_CONV,SAT>", None) for s in FP8] +
    [("float8_e5m2", "fixed<8,2,RND_ZERO,SAT_ZERO>", None), ("uint8", "float8_e4m3_fn_nosub", None)],
    [(s, d, None) for s in ("int8", "uint8", "fixed<8,4,RND_CONV,SAT>") for d in FP8[:2]] +
    [("int8", "float4_e2m1fn", None), ("fixed<8,4,RND_CONV,SAT>", "float6_e2m3fn", None)],
    # 16-bit sources
    [("float16", "float8_e4m3fn", True), ("float16", "float8_e4m3fn", None),
     ("float16", "float8_e5m2", None), ("float16", "bfloat16", None), ("float16", "int8", True),
     ("float16", "float8_e8m0fnu", None), ("float16", "fixed<8,3,RND,SAT_SYM>", None)],
    [("bfloat16", "float16", None), ("bfloat16", "float8_e4m3fn", None), ("int16", "float16", None),
     ("int16", "float8_e5m2", None), ("fixed<16,8>", "bfloat16", None)],
]


QUICK_CONVERSIONS = [
    [("float8_e4m3fn", "float8_e5m2", None), ("float8_e5m2", "float8_e4m3fn", None),
     ("float8_e5m2", "float8_e4m3fn", True), ("float8_e4m3fn", "float4_e2m1fn", None),
     ("float6_e3m2fn", "float6_e2m3fn", None), ("float8_e4m3b11fnuz", "float8_e4m3fn", None),
     ("float8_e4m3_fn_nosub", "float8_e5m2", None), ("float8_e5m2", "float8_e4m3b11fnuz", None)],
    [("float8_e4m3fn", "int8", None), ("float8_e5m2", "fixed<8,4,RND_CONV,SAT>", None),
     ("float8_e4m3fn", "fixed<8,4,TRN,WRAP>", None), ("float8_e5m2", "int8_narrow", None),
     ("int8", "float8_e4m3fn", None), ("uint8", "float8_e4m3_fn_nosub", None),
     ("fixed<8,4,RND_CONV,SAT>", "float6_e2m3fn", None), ("int8", "float4_e2m1fn", None)],
    [("float16", "float8_e4m3fn", None), ("float16", "bfloat16", None),
     ("float16", "fixed<8,3,RND,SAT_SYM>", None), ("int16", "float16", None),
     ("bfloat16", "float8_e5m2", None)],
    [("posit(8,0)", "float8_e4m3fn", None), ("float8_e4m3fn", "posit(8,1)", None),
     ("posit(16,1)", "bfloat16", None), ("float16", "posit(16,1)", None), ("posit(8,2)", "int8", None)],
]


def check_conversions(lists, tmp_path):
    """Every code of each source through each converter. Codes the reference rejects (NaN into
    finite or fixed formats, inf into wrapping fixed point) must give code 0, the hardware's
    documented fallback (which is also the reference's result for 0)."""
    groups = []
    for group in lists:
        srcs = [fmt(sn) for sn, _, _ in group]
        codes = np.arange(1 << max(f.bits for f in srcs), dtype=np.int64)
        checks = []
        for (sn, dn, saturate), src in zip(group, srcs):
            dst = fmt(dn)
            mine = codes & ((1 << src.bits) - 1)
            mine = np.where(np.isin(mine, encodable(src, dst, src.all_codes().astype(np.int64),
                                                    saturate)), mine, 0)
            checks.append((Converter(src, dst, saturate=saturate),
                           f"convert {sn} -> {dn} saturate={saturate}", (src, dst),
                           convert(mine, src, dst, saturate=saturate)))
        groups.append(([codes], checks))
    count, rate = run_groups(groups, 16, tmp_path)
    print(f"exhaustive conversions: {sum(len(g) for g in lists)} converters, {count} "
          f"vectors, {rate:.0f} vectors/s")


@pytest.mark.sim
def test_exhaustive_conversions(tmp_path):
    """fp8/fp6/fp4 among themselves, to and from int8/fixed, from 16-bit formats, and to and
    from posits (the posit engineer's units composed with these)."""
    check_conversions(QUICK_CONVERSIONS, tmp_path)


@pytest.mark.bench
@pytest.mark.parametrize("part", range(len(CONVERSIONS)))
def test_exhaustive_conversions_all_pairs(tmp_path, part):
    """Every ordered pair of the small formats, every small format to/from int8 and fixed."""
    check_conversions([CONVERSIONS[part]], tmp_path)


# --- random + corners for wide formats and FMA ------------------------------------------------
def corner_codes(f):
    """Zero, +-min subnormal, +-min normal, +-max, +-1, 1.5, inf, NaN, and neighbours of each."""
    vals = [0.0, f.min_subnormal, f.min_normal, f.max_value, 1.0, 1.5, np.inf, np.nan]
    base = []
    for v in vals:
        if (np.isnan(v) and not f.has_nan) or (np.isinf(v) and not (f.has_inf or f.has_nan)):
            continue
        base.append(int(f.encode(np.array([v]), saturate=not f.has_inf)[0]))
    mask = (1 << f.bits) - 1
    near = {(c + d) & mask for c in base for d in (-1, 0, 1)}
    near |= {(1 << (f.bits - 1)) ^ c for c in near}
    return np.array(sorted(near), dtype=np.int64)


def random_codes(f, n, rng):
    return rng.integers(0, 1 << f.bits, n)


def random_close(f, a, rng):
    """Codes near a's magnitude (random low mantissa bits, random sign): cancellation, ties."""
    low = rng.integers(0, 1 << max(1, f.man_bits), len(a))
    return (a ^ low ^ (rng.integers(0, 2, len(a)) << (f.bits - 1))) & ((1 << f.bits) - 1)


def wide_operands(f, n, rng):
    """All corner pairs, then n random pairs (half of b close to a)."""
    corners = corner_codes(f)
    a = np.concatenate([np.repeat(corners, len(corners)), random_codes(f, n, rng)])
    b = np.concatenate([np.tile(corners, len(corners)), random_codes(f, n // 2, rng),
                        random_close(f, a[-(n - n // 2):], rng)])
    return a, b


FMAS = [[("float8_e4m3fn",) * 4, ("float8_e5m2",) * 4, ("float6_e2m3fn",) * 4, ("float16",) * 4,
         ("float4_e2m1fn", "float8_e4m3fn", "bfloat16", "float8_e4m3fn")],
        [("bfloat16",) * 4, ("float8_e4m3fn", "float8_e5m2", "float16", "float16")]]


def fma_check(names, a, b, c, stages=1):
    fa, fb, fc, fo = (fmt(n) for n in names)
    a, b, c = (x & ((1 << f.bits) - 1) for x, f in zip((a, b, c), (fa, fb, fc)))
    return (FloatFMA(fa, fb, fc, fo, stages=stages), f"fma {' '.join(names)} stages={stages}",
            (fa, fb, fc, fo), ref_fma(fa, fb, fc, fo, a, b, c))


def fma_operands(names_list, n, rng):
    """Corner triples of each member's formats, then n random triples with c often close to
    -(a*b) (cancellation); 16-bit fields, each PE masks its own width."""
    parts = []
    for names in names_list:
        fa, fb, fc, fo = (fmt(x) for x in names)
        grid = np.array(np.meshgrid(*(corner_codes(f)[::2] for f in (fa, fb, fc)), indexing="ij"))
        parts.append(grid.reshape(3, -1))
    a, b = rng.integers(0, 1 << 16, n), rng.integers(0, 1 << 16, n)
    fa, fb, fc, _ = (fmt(x) for x in names_list[0])
    prod = ref_mul(fa, fb, fc, a & ((1 << fa.bits) - 1), b & ((1 << fb.bits) - 1)).astype(np.int64)
    c = np.where(rng.random(n) < 0.5, rng.integers(0, 1 << 16, n),
                 random_close(fc, prod ^ (1 << (fc.bits - 1)), rng) | (rng.integers(0, 256, n) << 8))
    parts.append(np.array([a, b, c]))
    return np.concatenate(parts, axis=1)


@pytest.mark.sim
def test_random_wide_and_fma(tmp_path, seed):
    """fp16 and bf16 mul and add: all corner pairs of both + 2**20 random pairs (a quarter with
    b close to a in each format); FMA: corner triples + random triples, same and mixed formats."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    a, b = wide_operands(fmt("float16"), 1 << 19, rng)    # every PE sees both halves
    a2, b2 = wide_operands(fmt("bfloat16"), 1 << 19, rng)
    a, b = np.concatenate([a, a2]), np.concatenate([b, b2])
    groups = [((a, b), [binary_check(op, n, n, n, a, b) for n in ("float16", "bfloat16")
                        for op in ("mul", "add")])]
    for names_list in FMAS:
        ops = fma_operands(names_list, 1 << 17, rng)
        groups.append((tuple(ops), [fma_check(names, *ops) for names in names_list]))
    count, rate = run_groups(groups, 16, tmp_path)
    print(f"random wide/fma: {count} vectors, {rate:.0f} vectors/s")


@pytest.mark.bench
@pytest.mark.parametrize("op,name", [(op, n) for n in ("float16", "bfloat16") for op in ("mul", "add")])
def test_random_16bit_ten_million(tmp_path, seed, op, name):
    """`forma verify` of fp16/bf16 mul and add: every corner-class pair, then 10M seeded random
    pairs (make test runs ~1M per PE in test_random_wide_and_fma)."""
    corners = len(case_corners(fmt(name))) ** 2
    verdict = verify(Case.parse(op, [name]), tmp_path, vectors=corners + 10_000_000, seed=seed)
    print(f"{op} {name}: {verdict.summary} ({corners} corner pairs first), "
          f"{verdict.rate / 1e6:.2f}M vectors/s, {verdict.seconds['simulate']:.0f} s with the build")
    assert verdict.mismatches == 0, "\n".join(verdict.first)


# --- pipelining and back-pressure ---------------------------------------------------------------
@pytest.mark.sim
@pytest.mark.parametrize("stages", [2, pytest.param(3, marks=pytest.mark.bench)])
def test_pipelines_under_back_pressure(tmp_path, stages):
    """Every cut point: E4M3 mul/add exhaustive, FMA and fp16 -> E4M3 conversion, under random
    output stalls."""
    a, b = pairs8(None, None)
    f, h = fmt("float8_e4m3fn"), fmt("float16")
    c = (a * 40503 + b * 7) & 0xFFFF
    checks = [(FloatMultiplier(f, stages=stages), f"mul stages={stages}", (f, f, f), f.mul(a, b)),
              (FloatAdder(f, stages=stages), f"add stages={stages}", (f, f, f), f.add(a, b))]
    groups = [((a, b), checks),
              ((a, b, c), [fma_check(("float8_e4m3fn", "float8_e4m3fn", "float16", "float8_e4m3fn"),
                                     a, b, c, stages)])]
    if stages == 2:
        codes = np.arange(1 << 16)
        groups.append(((codes,), [(Converter(h, f, stages=2), "convert float16 -> e4m3fn",
                                   (h, f), convert(codes, h, f))]))
    run_groups(groups, 16, tmp_path, stall=True)


# Depths past the decoded-operand register (the encoder's and the adder's inner cut points), up to
# each PE's maximum. "full" (make bench) covers every encoder style at several depths; "small"
# (make test) each inner cut point once, at the deepest pipelines. Pairs: (op, a, b, out, stages),
# exhaustive; FMAs: (formats, stages); conversions: (src, dst, stages), every code; wide: fp16/bf16
# (op, format, stages) on corner pairs + random pairs.
DEEP = {
    "full": {
        "pairs": [
            [("mul", "float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn", s) for s in (4, 5)] +
            [("add", "float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn", s) for s in (4, 6, 7)] +
            [("mul", "float8_e5m2", "float8_e5m2", "float8_e5m2", 5),
             ("add", "float8_e5m2", "float8_e5m2", "float8_e5m2", 7),
             ("add", "float6_e2m3fn", "float8_e4m3fn", "float8_e5m2", 7)],
            [(op, n, n, n, 5 if op == "mul" else 7)
             for n in ("float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "float8_e4m3b11fnuz",
                       "float8_e4m3_fn_nosub") for op in ("mul", "add")]],
        "fmas": [(("float8_e4m3fn", "float8_e4m3fn", "float16", "float8_e4m3fn"), s)
                 for s in (5, 6, 7, 8)] +
                [(("float8_e4m3fn",) * 4, 8),
                 (("float4_e2m1fn", "float8_e4m3fn", "bfloat16", "float8_e4m3fn"), 8)],
        "conversions": [("float16", "float8_e4m3fn", 3), ("float16", "float8_e4m3fn", 4),
                        ("float16", "float8_e8m0fnu", 4), ("float16", "float8_e4m3_fn_nosub", 4),
                        ("float16", "float8_e4m3b11fnuz", 4), ("bfloat16", "float16", 4)],
        "wide": [(op, n, 5 if op == "mul" else 7) for n in ("float16", "bfloat16")
                 for op in ("mul", "add")],
    },
    "small": {
        "pairs": [[("mul", "float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn", 5),
                   ("add", "float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn", 7),
                   ("add", "float6_e2m3fn", "float8_e4m3fn", "float8_e5m2", 7),
                   ("mul", "float4_e2m1fn", "float4_e2m1fn", "float4_e2m1fn", 5),
                   ("add", "float8_e4m3b11fnuz", "float8_e4m3b11fnuz", "float8_e4m3b11fnuz", 7),
                   ("mul", "float8_e4m3_fn_nosub", "float8_e4m3_fn_nosub", "float8_e4m3_fn_nosub", 5)]],
        "fmas": [(("float8_e4m3fn", "float8_e4m3fn", "float16", "float8_e4m3fn"), 8)],
        "conversions": [("float16", "float8_e4m3fn", 4), ("float16", "float8_e8m0fnu", 4)],
        "wide": [("mul", "float16", 5), ("add", "bfloat16", 7)],
    },
}


@pytest.mark.sim
@pytest.mark.parametrize("size", ["small", pytest.param("full", marks=pytest.mark.bench)])
def test_deep_pipelines_under_back_pressure(tmp_path, seed, size):
    """Inner cut points under random output stalls, all PEs in one build (padded to one
    latency): 8/6/4-bit mul/add exhaustive, FMA on corner triples + 2**16 random ones, every
    fp16/bf16 code through converters, fp16/bf16 mul/add on corner pairs + 2**15 random pairs
    of each format."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    plan, latency = DEEP[size], 8
    a, b = pairs8(None, None)
    groups = [((a, b), padded([binary_check(*spec[:4], a, b, stages=spec[4]) for spec in group],
                              latency)) for group in plan["pairs"]]
    ops = fma_operands([names for names, _ in plan["fmas"]], 1 << 16, rng)
    groups.append((tuple(ops), padded([fma_check(names, *ops, stages)
                                       for names, stages in plan["fmas"]], latency)))
    codes = np.arange(1 << 16)
    checks = []
    for sn, dn, stages in plan["conversions"]:
        src, dst = fmt(sn), fmt(dn)
        checks.append((Converter(src, dst, stages=stages), f"convert {sn} -> {dn} stages={stages}",
                       (src, dst), convert(codes, src, dst)))
    groups.append(((codes,), padded(checks, latency)))
    a, b = wide_operands(fmt("float16"), 1 << 15, rng)
    a2, b2 = wide_operands(fmt("bfloat16"), 1 << 15, rng)
    a, b = np.concatenate([a, a2]), np.concatenate([b, b2])
    groups.append(((a, b), padded([binary_check(op, n, n, n, a, b, stages=stages)
                                   for op, n, stages in plan["wide"]], latency)))
    count, rate = run_groups(groups, 16, tmp_path, stall=True)
    print(f"deep pipelines ({size}): {sum(len(g[1]) for g in groups)} PEs, {count} vectors, "
          f"{rate:.0f} vectors/s")


# --- parameter validation ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameter_errors_name_the_value():
    with pytest.raises(SpecError, match="stages=0"):
        FloatMultiplier("float8_e4m3fn", stages=0)
    with pytest.raises(SpecError, match="a_fmt=int8"):
        FloatAdder("int8")
    with pytest.raises(SpecError, match="out_fmt=float9"):
        FloatFMA("float8_e4m3fn", out_fmt="float9")
    with pytest.raises(SpecError, match="rounding"):
        Converter("float16", "float8_e4m3fn", rounding="trunc")
    gc.collect()  # the half-built components warn here, inside this test's filter


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_attributes():
    pe = FloatMultiplier("float8_e4m3fn", "float8_e5m2", "float16", stages=2)
    assert (pe.a_format.name, pe.b_format.name, pe.out_format.name, pe.latency) == \
        ("float8_e4m3fn", "float8_e5m2", "float16", 2)
    assert data.Layout.cast(pe.i.payload.shape()).size == 16 and len(pe.o.payload) == 16
    del pe
    gc.collect()


# --- exact-accumulator MAC -----------------------------------------------------------------------
def mac_streams(fa, fb, lanes, count, longest, rng):
    """Per-lane streams of whole dot products (random lengths 1..longest, the last one cut to
    fit), concatenated lane after lane: (a, b, last, start of each beat's dot product)."""
    a = random_codes(fa, lanes * count, rng)
    b = random_codes(fb, lanes * count, rng)
    last = np.zeros(lanes * count, dtype=np.int64)
    start = np.zeros(lanes * count, dtype=np.int64)
    for lane in range(lanes):
        pos, end = lane * count, (lane + 1) * count
        while pos < end:
            size = min(int(rng.integers(1, longest + 1)), end - pos)
            last[pos + size - 1] = 1
            start[pos:pos + size] = pos
            pos += size
    return a, b, last, start


def prefix_dots(fa, fb, fo, a, b, start):
    """The reference's exact dot product of each beat's prefix (its dot product so far)."""
    want = np.zeros(len(a), dtype=np.uint64)
    offset = np.arange(len(a)) - start
    for k in range(1, int(offset.max()) + 2):
        rows = np.nonzero(offset == k - 1)[0]
        if len(rows):
            idx = start[rows][:, None] + np.arange(k)
            want[rows] = dot(a[idx], b[idx], fa, fb, fo, accumulate="exact")
    return want


MACS = [("float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn"),
        ("float8_e5m2", "float8_e5m2", "float16"),
        ("float8_e4m3fn", "float8_e5m2", "bfloat16"),
        ("float16", "float16", "float16")]


@pytest.mark.sim
@pytest.mark.parametrize("beats", [1 << 13, pytest.param(1 << 16, marks=pytest.mark.bench)])
def test_mac_running_sums_under_back_pressure(tmp_path, seed, beats):
    """emit="every": the rounded exact sum after every beat of random-length dot products
    (1..40 beats; NaN/inf/zero codes drawn uniformly), under random output stalls."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    a, b, last, start = mac_streams(fmt("float16"), fmt("float16"), LANES, beats, 40, rng)
    groups = []
    for depths in ((2, 2, 2, 2), (4, 5, 6, 7)):   # the second group: every inner cut point
        checks = []
        for names, stages in zip(MACS, depths):
            fa, fb, fo = (fmt(n) for n in names)
            ma, mb = a & ((1 << fa.bits) - 1), b & ((1 << fb.bits) - 1)
            checks.append((FloatMAC(fa, fb, fo, length=64, stages=stages, emit="every"),
                           f"mac {' '.join(names)} stages={stages}", (fa, fb, fmt("uint1"), fo),
                           prefix_dots(fa, fb, fo, ma, mb, start)))
        groups.append(((a, b, last), padded(checks, 7)))   # the streams end with `last`
    count, rate = run_groups(groups, 16, tmp_path, stall=True)
    print(f"mac running sums: {sum(len(g[1]) for g in groups)} MACs, {count} beats, "
          f"{rate:.0f} beats/s")


def test_mac_emits_one_result_per_last_under_back_pressure():
    """emit="last" (Amaranth simulator): one result per dot product, in order, with stalls."""
    f, h = fmt("float8_e4m3fn"), fmt("float16")
    dut = FloatMAC(f, f, h, length=16, stages=3)
    rng = np.random.default_rng(7)
    segments = [rng.integers(0, 256, (n, 2)) for n in (1, 3, 16, 2, 7, 1, 5)]
    expected = [int(dot(s[:, 0], s[:, 1], f, f, h)[()]) for s in segments]
    beats = [(int(x), int(y), int(k == len(s) - 1)) for s in segments for k, (x, y) in enumerate(s)]
    got = []

    async def producer(ctx):
        for a, b, last in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"a": a, "b": b, "last": last})
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            for _ in range(int(rng.integers(0, 2))):
                await ctx.tick()

    async def consumer(ctx):
        while len(got) < len(expected):
            for _ in range(int(rng.integers(0, 4))):
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            (payload,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            got.append(int(payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-3)
    assert got == expected


def test_kulisch_width_formula():
    """E4M3 x E4M3: products are multiples of 2**-18 below 448**2; 1024 of them need 47 bits."""
    bits, lsb = kulisch_width(fmt("float8_e4m3fn"), fmt("float8_e4m3fn"), 1024)
    assert lsb == -18 and bits == 1 + (1024 * 448 * 448 << 18).bit_length()
