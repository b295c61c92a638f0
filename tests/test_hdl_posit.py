"""Posit PEs against the bit-exact reference on Verilator: exhaustive for small formats, seeded
random plus every corner class above, quire MAC streams under back-pressure, decode/encode round trips.

Several PEs share one build: a Lockstep bundle feeds each the low bits of the same operands and
concatenates their results, so one run checks many (op, format, stages) at once.
"""
import time

import numpy as np
import pytest
from amaranth import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from forma.hdl.posit_pe import PositAdder, PositFMA, PositMultiplier, PositQuireMAC
from forma.hdl.posit_units import PositDecoder, PositEncoder
from forma.errors import SpecError
from forma.generators import to_verilog
from forma.sim.bulk import run_bulk
from forma.sim.formats import convert, parse_format

OPS = {"mul": PositMultiplier, "add": PositAdder, "fma": PositFMA}


class Lockstep(wiring.Component):
    """PEs fed one stream: each takes the low bits of every input field it has; results concatenate.

    A transfer happens when every PE is ready (input) or valid (output), so PEs of different
    latencies run together (at the pace of the slowest).
    """

    def __init__(self, pes, fields):
        self.pes = pes
        self.fields = fields
        out_width = sum(pe.o.payload.shape().width for pe in pes)
        super().__init__({"i": In(stream.Signature(data.StructLayout(fields))),
                          "o": Out(stream.Signature(out_width))})

    def elaborate(self, platform):
        m = Module()
        all_ready = Signal()
        all_valid = Signal()
        m.d.comb += [all_ready.eq(Cat(pe.i.ready for pe in self.pes).all()),
                     all_valid.eq(Cat(pe.o.valid for pe in self.pes).all()),
                     self.i.ready.eq(all_ready), self.o.valid.eq(all_valid),
                     self.o.payload.eq(Cat(pe.o.payload for pe in self.pes))]
        for index, pe in enumerate(self.pes):
            m.submodules[f"pe{index}"] = pe
            layout = pe.i.payload.shape()
            m.d.comb += [pe.i.valid.eq(self.i.valid & all_ready), pe.o.ready.eq(self.o.ready & all_valid)]
            for name, field in layout:
                width = Shape.cast(field.shape).width
                m.d.comb += getattr(pe.i.payload, name).eq(getattr(self.i.payload, name)[:width])
        return m


class Delayed(wiring.Component):
    """A PE followed by `extra` output registers (same stall rule), so a bundle's PEs share one latency."""

    def __init__(self, pe, extra):
        self.pe, self.extra = pe, extra
        self.format, self.stages = pe.format, pe.stages
        super().__init__({"i": In(stream.Signature(pe.i.payload.shape())),
                          "o": Out(stream.Signature(pe.format.n))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        wiring.connect(m, wiring.flipped(self.i), pe.i)
        advance = ~self.o.valid | self.o.ready
        valid, payload = pe.o.valid, pe.o.payload
        m.d.comb += pe.o.ready.eq(advance)
        for index in range(self.extra):
            next_valid = self.o.valid if index == self.extra - 1 else Signal(name=f"valid_{index}")
            next_payload = self.o.payload if index == self.extra - 1 else Signal(len(payload), name=f"payload_{index}")
            with m.If(advance):
                m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
            valid, payload = next_valid, next_payload
        return m


def equalize(pes):
    """Each PE padded with output registers up to the bundle's largest latency."""
    latency = max(pe.stages for pe in pes)
    return [Delayed(pe, latency - pe.stages) if pe.stages < latency else pe for pe in pes]


def run_lockstep(pes, fields, operands, expected, build_dir, stall=False, lanes=4):
    """Run a Lockstep of pes on operand arrays (dict field → codes) and per-PE expected codes."""
    vectors, shift = np.zeros(len(next(iter(operands.values()))), np.uint64), 0
    for name, width in fields.items():
        vectors |= (np.asarray(operands[name], np.uint64) & np.uint64((1 << width) - 1)) << np.uint64(shift)
        shift += width
    want, shift = np.zeros(len(vectors), np.uint64), 0
    for pe, codes in zip(pes, expected):
        want |= np.asarray(codes, np.uint64) << np.uint64(shift)
        shift += pe.format.n
    bundle = Lockstep(equalize(pes), fields)
    result = run_bulk(bundle, vectors, want, sum(fields.values()), shift, build_dir, lanes=lanes, stall=stall)
    if result.mismatches:
        index, got = result.first[0]
        shift, lines = 0, []
        for pe, codes in zip(pes, expected):
            mask = (1 << pe.format.n) - 1
            mine = (got >> shift) & mask
            if mine != int(codes[index]):
                args = ", ".join(f"{k}=0x{int(v[index]) & mask:x}" for k, v in operands.items())
                lines.append(f"{type(pe).__name__}({pe.format.name}, stages={pe.stages}): {args} "
                             f"→ got 0x{mine:x}, expected 0x{int(codes[index]):x}")
            shift += pe.format.n
        pytest.fail(f"{result.mismatches} mismatches in {build_dir}; first at vector {index}:\n" + "\n".join(lines))
    print(f"{len(vectors)} vectors × {len(pes)} PEs in {result.sim_seconds:.2f} s ({result.rate:,.0f} vectors/s)")
    return result


def reference(op, fmt, operands):
    """The reference result codes of op on the low n bits of the operands."""
    mask = (1 << fmt.n) - 1
    codes = [(np.asarray(operands[k], np.uint64) & np.uint64(mask)).astype(fmt.code_dtype)
             for k in "abc"[:2 + (op == "fma")]]
    return getattr(fmt, op)(*codes)


def posit_corners(fmt):
    """Corner codes: 0, NaR, ±1, ±maxpos, ±minpos, every regime boundary (±2**j, ±(2**j ± 1)), ±1.5."""
    n, mask = fmt.n, (1 << fmt.n) - 1
    codes = {0, fmt.nar_code, int(fmt.encode(1.5)), int(fmt.encode(0.75))}
    for j in range(n):
        codes |= {(1 << j) - 1, 1 << j, (1 << j) + 1}
    codes |= {(-c) & mask for c in codes}
    return np.array(sorted(codes), dtype=np.uint64)


def tie_detect(fmt, op, a, b):
    """True where the exact a op b lies exactly halfway between two posits (RNE decides)."""
    (ma, ea), (mb, eb) = fmt.to_scaled(a), fmt.to_scaled(b)
    ma, mb = ma.astype(object), mb.astype(object)
    if op == "mul":
        m, e = ma * mb, ea + eb
    else:
        e = np.minimum(ea, eb)
        m = ma * (np.ones_like(ma) << (ea - e).astype(object)) + mb * (np.ones_like(mb) << (eb - e).astype(object))
    scale = 1 << 40
    up, down = fmt.encode_scaled(m * scale + 1, e - 40), fmt.encode_scaled(m * scale - 1, e - 40)
    nonzero = np.array([v != 0 for v in m])
    return (up != down) & nonzero & (fmt.encode_scaled(m * scale, e - 40) != fmt.nar_code)


def random_operands(fmt, count, seed, op):
    """Corner × corner pairs, constructed ties and cancellations, then uniform random codes."""
    rng = np.random.default_rng(seed)
    n, mask = fmt.n, (1 << fmt.n) - 1
    corners = posit_corners(fmt)
    ca, cb = (g.ravel() for g in np.meshgrid(corners, corners, indexing="ij"))
    draw = lambda size: rng.integers(0, 1 << n, size, dtype=np.uint64)
    x = draw(20000)
    if op == "mul":                        # odd codes × ±1.5·2**j: one bit beyond the operand's precision
        halves = np.array([int(fmt.encode(1.5 * 2.0 ** j)) for j in range(-8, 8)], dtype=np.uint64)
        ta, tb = x | np.uint64(1), rng.choice(np.concatenate([halves, (-halves.astype(np.int64)) & mask]), len(x))
    else:                                  # c + half the gap to its neighbour, where that is a posit
        nxt = (x + np.uint64(1)) & np.uint64(mask)
        half = (fmt.decode(nxt.astype(fmt.code_dtype)) - fmt.decode(x.astype(fmt.code_dtype))) / 2
        hb = fmt.encode(np.nan_to_num(half)).astype(np.uint64)
        ta, tb = x, hb
    neg = lambda c: (-c.astype(np.int64)) & mask
    y = draw(20000)
    cancel_a = np.concatenate([y, y, y])
    cancel_b = np.concatenate([neg(y), neg(y) + 1, neg(y) - 1]).astype(np.uint64) & np.uint64(mask)
    rest = max(count - len(ca) - len(ta) - len(cancel_a), 0)
    a = np.concatenate([ca, ta, cancel_a, draw(rest)]).astype(np.uint64)
    b = np.concatenate([cb, tb, cancel_b, draw(rest)]).astype(np.uint64)
    ties = tie_detect(fmt, op, ta.astype(fmt.code_dtype), tb.astype(fmt.code_dtype))
    return {"a": a, "b": b}, int(ties.sum())


# Exhaustive bundles of (op, format): every (a, b) pair of the bundle's width covers every pair of
# each narrower member through its low bits. Results fill at most the harness's 64 output bits.
EXHAUSTIVE = {
    "8-mixed": (8, [(op, f"posit({n},{es})") for n, es in ((8, 0), (8, 1), (8, 2), (6, 1)) for op in ("mul", "add")]
                + [("mul", "posit(2,0)")]),
    "8-more": (8, [(op, f"posit({n},{es})") for n, es in ((6, 0), (6, 2), (7, 3), (4, 0), (4, 2), (4, 3))
                   for op in ("mul", "add")]),
    "8-rest": (8, [(op, f"posit({n},{es})") for n, es in ((5, 0), (5, 1), (5, 2), (4, 1), (8, 4), (3, 1))
                   for op in ("mul", "add")] + [("add", "posit(2,0)")]),
}
# All 2**20 pairs of posit(10,es): one build per op, a longer run.
EXHAUSTIVE_10 = {
    "10-mul": (10, [("mul", f"posit({n},{es})") for n, es in ((10, 0), (10, 1), (10, 2), (5, 0), (5, 1), (5, 2))]
               + [("mul", "posit(4,1)"), ("mul", "posit(8,4)"), ("add", "posit(3,1)")]),
    "10-add": (10, [("add", f"posit({n},{es})") for n, es in ((10, 0), (10, 1), (10, 2), (5, 0), (5, 1), (5, 2))]
               + [("add", "posit(4,1)"), ("add", "posit(8,4)"), ("mul", "posit(3,1)"), ("add", "posit(2,0)")]),
}


def _stages(op, index):
    """A spread of pipeline depths over a bundle's members (1 first, then up to the maximum)."""
    most = len(OPS[op].BOUNDARIES) + 1
    return 1 + index % most


# `make test` proves the 8-mixed bundle; `make bench` the rest (each build is minutes on 2 cores).
@pytest.mark.sim
@pytest.mark.parametrize("bundle", [b if b == "8-mixed" else pytest.param(b, marks=pytest.mark.bench)
                                    for b in sorted(EXHAUSTIVE)])
def test_exhaustive_small_formats(tmp_path, bundle):
    """All pairs of mul and add for posit(n,es), n in 2..8, es in 0..4, over stages 1..max; the
    same build again on a slice under random back-pressure."""
    _exhaustive(tmp_path, *EXHAUSTIVE[bundle])


@pytest.mark.bench
@pytest.mark.sim
@pytest.mark.parametrize("bundle", sorted(EXHAUSTIVE_10))
def test_exhaustive_posit10(tmp_path, bundle):
    """All 2**20 pairs of posit(10,0/1/2) (and narrower members), mul or add."""
    _exhaustive(tmp_path, *EXHAUSTIVE_10[bundle])


def _exhaustive(tmp_path, width, members):
    pes = [OPS[op](name, stages=_stages(op, i)) for i, (op, name) in enumerate(members)]
    grid = np.arange(1 << (2 * width), dtype=np.uint64)
    operands = {"a": grid & np.uint64((1 << width) - 1), "b": grid >> np.uint64(width)}
    expected = [reference(op, pe.format, operands) for (op, _), pe in zip(members, pes)]
    lanes = 2 if width == 8 else 4
    run_lockstep(pes, {"a": width, "b": width}, operands, expected, tmp_path / "build", lanes=lanes)
    part = {k: v[:1 << 16] for k, v in operands.items()}
    run_lockstep(pes, {"a": width, "b": width}, part, [e[:1 << 16] for e in expected], tmp_path / "build",
                 stall=True, lanes=lanes)


RANDOM_16 = [("mul", "posit(16,1)", 1), ("add", "posit(16,1)", 3), ("mul", "posit(16,0)", 5), ("add", "posit(16,2)", 6)]


def _random_16(tmp_path, seed, count):
    """posit(16,1) mul and add, posit(16,0) mul and posit(16,2) add on one build."""
    pes = [OPS[op](name, stages=s) for op, name, s in RANDOM_16]
    fmt = parse_format("posit(16,1)")
    ops_m, ties_m = random_operands(fmt, count // 2, seed, "mul")
    ops_a, ties_a = random_operands(fmt, count // 2, seed + 1, "add")
    operands = {k: np.concatenate([ops_m[k], ops_a[k]]) for k in "ab"}
    print(f"seed {seed}: {len(operands['a'])} vectors; {ties_m} mul and {ties_a} add exact ties in posit(16,1)")
    assert ties_m > 1000 and ties_a > 1000
    expected = [reference(op, pe.format, operands) for (op, _, _), pe in zip(RANDOM_16, pes)]
    run_lockstep(pes, {"a": 16, "b": 16}, operands, expected, tmp_path / "build", lanes=4)


@pytest.mark.sim
def test_random_posit16(tmp_path, seed):
    """posit(16,*): corners × corners, constructed ties, cancellations and 1M seeded random pairs."""
    _random_16(tmp_path, seed, 1 << 20)


@pytest.mark.bench
@pytest.mark.sim
def test_random_posit16_long(tmp_path, seed):
    """As test_random_posit16 with 16M vectors."""
    _random_16(tmp_path, seed, 1 << 24)


@pytest.mark.bench
@pytest.mark.sim
def test_random_posit32(tmp_path, seed):
    """posit(32,2) mul and add side by side: corners × corners, ties, cancellations, random."""
    fmt = parse_format("posit(32,2)")
    pes = [PositMultiplier(fmt, stages=3), PositAdder(fmt, stages=2)]
    ops_a, ties_m = random_operands(fmt, 1 << 19, seed, "mul")
    ops_b, ties_a = random_operands(fmt, 1 << 19, seed + 1, "add")
    operands = {k: np.concatenate([ops_a[k], ops_b[k]]) for k in "ab"}
    print(f"seed {seed}: {len(operands['a'])} vectors, {ties_m} mul ties, {ties_a} add ties")
    expected = [reference("mul", fmt, operands), reference("add", fmt, operands)]
    run_lockstep(pes, {"a": 32, "b": 32}, operands, expected, tmp_path / "build", lanes=4)


# ----- quire MAC ------------------------------------------------------------------------------------

STREAM_LENGTHS = (1, 2, 3, 4, 7, 16, 40, 100)   # every lane carries one stream of each length per round


def stream_batch(fmt, streams, length, rng):
    """(a, b) code arrays of shape (streams, length): random, exact cancellation to zero, a NaR,
    ±maxpos runs (overflow for small quires), and cancellation leaving minpos**2."""
    n, mask = fmt.n, (1 << fmt.n) - 1
    a = rng.integers(0, 1 << n, (streams, length), dtype=np.uint64)
    b = rng.integers(0, 1 << n, (streams, length), dtype=np.uint64)
    kind = rng.integers(0, 5, streams)
    half = length // 2
    for row in np.flatnonzero((kind == 1) | (kind == 4)):
        order = rng.permutation(half)
        a[row, half:2 * half] = (-a[row, :half][order].astype(np.int64)) & mask
        b[row, half:2 * half] = b[row, :half][order]
        if length % 2:
            a[row, -1] = 0 if kind[row] == 1 else fmt.minpos_code
            b[row, -1] = fmt.minpos_code
    for row in np.flatnonzero(kind == 2):
        a[row, rng.integers(0, length)] = fmt.nar_code
    for row in np.flatnonzero(kind == 3):
        a[row] = np.where(rng.random(length) < 0.9, fmt.maxpos_code, (-fmt.maxpos_code) & mask)
        b[row] = fmt.maxpos_code
    return a, b


def quire_outputs(fmt, a, b, carry_bits):
    """Reference outputs of a (streams, length) batch: the running quire rounded after each input."""
    quire = fmt.quire(shape=(a.shape[0],), carry_bits=carry_bits)
    out = np.zeros(a.shape, np.uint64)
    for t in range(a.shape[1]):
        quire.fma(a[:, t].astype(fmt.code_dtype), b[:, t].astype(fmt.code_dtype))
        out[:, t] = quire.to_posit()
    return out


def mac_vectors(formats, carries, lanes, rounds, seed):
    """Operands, last flags and per-PE expectations, laid out so each lane holds whole streams."""
    rng = np.random.default_rng(seed)
    wide = max(formats, key=lambda f: f.n)
    per_lane = {field: [[] for _ in range(lanes)] for field in ("a", "b", "last")}
    expected = [[[] for _ in range(lanes)] for _ in formats]
    for length in STREAM_LENGTHS:
        a, b = stream_batch(wide, lanes * rounds, length, rng)
        outs = []
        for fmt, carry in zip(formats, carries):
            mask = np.uint64((1 << fmt.n) - 1)
            outs.append(quire_outputs(fmt, a & mask, b & mask, carry))
        last = np.zeros(a.shape, np.uint64)
        last[:, -1] = 1
        for row in range(lanes * rounds):
            lane = row % lanes
            for field, values in (("a", a), ("b", b), ("last", last)):
                per_lane[field][lane].append(values[row])
            for k in range(len(formats)):
                expected[k][lane].append(outs[k][row])
    operands = {field: np.concatenate([np.concatenate(rows) for rows in lanes_]) for field, lanes_ in per_lane.items()}
    expected = [np.concatenate([np.concatenate(rows) for rows in lanes_]) for lanes_ in expected]
    return operands, expected


@pytest.mark.sim
def test_quire_mac_streams(tmp_path, seed):
    """Quire MACs (posit(16,1) wide and with a 2-bit carry field, posit(8,0), posit(8,2)): seeded
    streams with cancellation to exact zero, NaR, overflow and minpos**2 leftovers, back-pressure on."""
    specs = [("posit(16,1)", 30, 1), ("posit(16,1)", 2, 3), ("posit(8,0)", 30, 2), ("posit(8,2)", 0, 5)]
    formats = [parse_format(name) for name, _, _ in specs]
    pes = [PositQuireMAC(fmt, stages=s, carry_bits=c) for fmt, (_, c, s) in zip(formats, specs)]
    lanes, rounds = 4, 48
    started = time.perf_counter()
    operands, expected = mac_vectors(formats, [c for _, c, _ in specs], lanes, rounds, seed)
    print(f"seed {seed}: {len(operands['a'])} MAC inputs, reference in {time.perf_counter() - started:.1f} s; "
          f"{int((expected[0] == 0).sum())} exact zeros and {int((expected[0] == 0x8000).sum())} NaR results "
          f"for posit(16,1), {int((expected[1] == 0x8000).sum())} NaR with a 2-bit carry field")
    for stall in (False, True):
        run_lockstep(pes, {"a": 16, "b": 16, "last": 1}, operands, expected, tmp_path / "build",
                     stall=stall, lanes=lanes)


class CountedMAC(wiring.Component):
    """A PositQuireMAC whose `last` comes from a counter (every `length`-th input): posit(32,2)
    operands fill the bulk harness's 64-bit payload."""

    def __init__(self, fmt, length, stages):
        self.mac = PositQuireMAC(fmt, stages=stages)
        self.format, self.stages, self.length = self.mac.format, stages, length
        super().__init__({"i": In(stream.Signature(data.StructLayout({"a": fmt.n, "b": fmt.n}))),
                          "o": Out(stream.Signature(fmt.n))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mac = mac = self.mac
        count = Signal(range(self.length))
        wiring.connect(m, wiring.flipped(self.o), mac.o)
        m.d.comb += [mac.i.valid.eq(self.i.valid), self.i.ready.eq(mac.i.ready),
                     mac.i.payload.a.eq(self.i.payload.a), mac.i.payload.b.eq(self.i.payload.b),
                     mac.i.payload.last.eq(count == self.length - 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += count.eq(Mux(count == self.length - 1, 0, count + 1))
        return m


@pytest.mark.bench
@pytest.mark.sim
def test_quire_mac_posit32(tmp_path, seed):
    """posit(32,2) quire MAC (512-bit quire): seeded streams of 16 products, back-pressure on."""
    fmt, length, lanes = parse_format("posit(32,2)"), 16, 4
    rng = np.random.default_rng(seed)
    a, b = stream_batch(fmt, lanes * 256, length, rng)
    expected = quire_outputs(fmt, a, b, 30)
    pe = CountedMAC(fmt, length, stages=3)
    run_lockstep([pe], {"a": 32, "b": 32}, {"a": a.ravel(), "b": b.ravel()}, [expected.ravel()],
                 tmp_path / "build", stall=True, lanes=lanes)


# ----- decode → encode through the common layout --------------------------------------------------

class Convert(wiring.Component):
    """posit → posit through PositDecoder and PositEncoder, one register."""

    def __init__(self, src, dst):
        self.decoder = PositDecoder(src)
        self.encoder = PositEncoder(dst, self.decoder.sig_bits, self.decoder.exp_bits)
        self.src, self.format, self.stages = parse_format(src), parse_format(dst), 1
        super().__init__({"i": In(stream.Signature(data.StructLayout({"a": self.src.n}))),
                          "o": Out(stream.Signature(self.format.n))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder, m.submodules.encoder = self.decoder, self.encoder
        advance = ~self.o.valid | self.o.ready
        value = self.decoder.o
        m.d.comb += [self.i.ready.eq(advance), self.decoder.i.eq(self.i.payload.a),
                     self.encoder.i.sign.eq(value.sign), self.encoder.i.exp.eq(value.exp),
                     self.encoder.i.sig.eq(value.sig), self.encoder.i.zero.eq(value.zero),
                     self.encoder.i.inf.eq(value.inf), self.encoder.i.nan.eq(value.nan)]
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.encoder.o)]
        return m


@pytest.mark.sim
def test_decode_encode_every_code(tmp_path):
    """Every 16-bit code through decoder → encoder: identity for posit(16,1), conversions to
    narrower, wider and other-es posits equal the reference's one rounding."""
    pairs = [("posit(16,1)", "posit(16,1)"), ("posit(16,1)", "posit(8,0)"), ("posit(16,2)", "posit(12,0)"),
             ("posit(16,0)", "posit(10,3)"), ("posit(8,2)", "posit(16,1)")]
    pes = [Convert(src, dst) for src, dst in pairs]
    codes = np.arange(1 << 16, dtype=np.uint64)
    expected = []
    for src, dst in pairs:
        src, dst = parse_format(src), parse_format(dst)
        expected.append(convert((codes & np.uint64((1 << src.n) - 1)).astype(src.code_dtype), src, dst))
    assert np.array_equal(expected[0], codes)
    run_lockstep(pes, {"a": 16}, {"a": codes}, expected, tmp_path / "build")


def test_validation_latency_and_deterministic_verilog():
    """Bad parameters raise SpecError naming them; the contract attributes; same spec → same Verilog."""
    for bad in (0, True, 7, "2"):
        with pytest.raises(SpecError, match="stages"):
            PositAdder("posit(16,1)", stages=bad)
    with pytest.raises(SpecError, match="posit"):
        PositMultiplier("int8")
    with pytest.raises(SpecError, match="carry_bits"):
        PositQuireMAC("posit(8,0)", carry_bits=-1)
    mac = PositQuireMAC("posit(32,2)", stages=2)
    assert (mac.quire_bits, mac.latency, mac.out_format.name) == (512, 2, "posit(32,2)")
    assert PositQuireMAC("posit(16,1)").quire_bits == parse_format("posit(16,1)").quire_width(30) == 144
    for cls in (PositMultiplier, PositAdder, PositFMA):
        pe = cls("posit(16,1)", stages=3)
        assert (pe.latency, pe.a_format, pe.b_format, pe.out_format) == (3, pe.format, pe.format, pe.format)
        assert to_verilog(cls("posit(16,1)", stages=3), name="dut") == to_verilog(pe, name="dut")


FMA_MEMBERS = ["posit(16,1)", "posit(8,0)", "posit(8,2)", "posit(6,0)", "posit(6,1)", "posit(6,2)", "posit(5,1)",
               "posit(4,0)", "posit(4,2)"]


@pytest.mark.bench
@pytest.mark.sim
def test_fma(tmp_path, seed):
    """a × b + c: every triple of posit(n ≤ 6) (low bits of the operands), and for posit(16,1) and
    posit(8,*) corners, c = -round(a × b) near-cancellations and seeded random triples."""
    rng = np.random.default_rng(seed)
    wide = parse_format("posit(16,1)")
    grid = np.arange(1 << 18, dtype=np.uint64)
    low = [(grid >> np.uint64(6 * k)) & np.uint64(63) for k in range(3)]
    high = [rng.integers(0, 1 << 10, len(grid), dtype=np.uint64) << np.uint64(6) for _ in range(3)]
    a, b, c = (h | l for h, l in zip(high, low))
    corners = posit_corners(wide)
    ca, cb, cc = (rng.choice(corners, 1 << 16) for _ in range(3))
    x, y = rng.integers(0, 1 << 16, (2, 1 << 17), dtype=np.uint64)
    near = wide.neg(wide.mul(x.astype(wide.code_dtype), y.astype(wide.code_dtype))).astype(np.uint64)
    near = np.concatenate([near, (near + np.uint64(1)) & np.uint64(0xffff)])
    operands = {"a": np.concatenate([a, ca, x, x]), "b": np.concatenate([b, cb, y, y]),
                "c": np.concatenate([c, cc, near])}
    pes = [PositFMA(name, stages=1 + i % 6) for i, name in enumerate(FMA_MEMBERS)]
    expected = [reference("fma", pe.format, operands) for pe in pes]
    run_lockstep(pes, {"a": 16, "b": 16, "c": 16}, operands, expected, tmp_path / "build", stall=True)
