"""MX block dot-product PE: the element-pair sweep and seeded random blocks on Verilator for four MX
formats in one build, the case's stimulus and reference rules, parameters and determinism.
"""
from fractions import Fraction

import numpy as np
import pytest
from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from forma.errors import SpecError
from forma.generators import to_verilog
from forma.hdl.mx_pe import MXDotPE
from forma.sim.bulk import pack_fields, run_bulk
from forma.sim.cases import corner_codes, random_codes
from forma.sim.cases_mx import DotCase
from forma.sim.formats import parse_format
from forma.sim.formats.exact import round_float, value

# (format, output format, stages): one build holds all four PEs side by side.
CHECKS = [("mxfp8_e4m3", "float32", 1), ("mxfp4", "bfloat16", 4), ("mxint8", "float32", 2),
          ("mxfp6_e2m3", "float16", 3)]
RANDOM_BLOCKS = 16_384


class SideBySide(wiring.Component):
    """PEs in lockstep behind one stream: payloads and results concatenated, first PE lowest;
    shallower PEs get input registers (moving with the shared stall rule) up to the deepest."""

    def __init__(self, pes):
        self.pes = pes
        self.latency = max(pe.latency for pe in pes)
        self.in_widths = [data.Layout.cast(pe.i.payload.shape()).size for pe in pes]
        self.out_widths = [pe.out_format.bits for pe in pes]
        super().__init__({"i": In(stream.Signature(sum(self.in_widths))),
                          "o": Out(stream.Signature(sum(self.out_widths)))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        offset, results = 0, []
        for number, (pe, width) in enumerate(zip(self.pes, self.in_widths)):
            m.submodules[f"pe{number}"] = pe
            valid, payload = self.i.valid, self.i.payload[offset:offset + width]
            for stage in range(self.latency - pe.latency):
                next_valid = Signal(name=f"pe{number}_valid{stage}")
                next_payload = Signal(width, name=f"pe{number}_payload{stage}")
                with m.If(advance):
                    m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
                valid, payload = next_valid, next_payload
            m.d.comb += [pe.i.valid.eq(valid), pe.i.payload.eq(payload), pe.o.ready.eq(self.o.ready)]
            results.append(pe.o.payload)
            offset += width
        m.d.comb += [self.o.valid.eq(self.pes[0].o.valid), self.o.payload.eq(Cat(*results))]
        return m


def check_side_by_side(checks, random_blocks, seed, build_dir):
    """The sweep plus `random_blocks` seeded random blocks for each (format, out, stages) in
    `checks`, all PEs in one Verilator build, under back-pressure; fails with the first
    mismatches in MX notation."""
    print(f"seed {seed}")
    cases = [DotCase.parse([name], out, stages) for name, out, stages in checks]
    operands, expected = [], []
    for case in cases:
        sweep, drawn = case.exhaustive(), case.random(random_blocks, seed)
        joined = tuple(np.concatenate([x, y]) for x, y in zip(sweep, drawn))
        operands.append(joined)
        expected.append(case.reference(joined))
        print(f"{case.title}: {len(sweep[0])} sweep and corner blocks, {random_blocks} random")
    count = max(len(ops[0]) for ops in operands)
    rows = [np.arange(count) % len(ops[0]) for ops in operands]   # shorter runs repeat
    fields = [f for case, ops, r in zip(cases, operands, rows)
              for f in case.fields(tuple(x[r] for x in ops))]
    vectors, width = pack_fields(fields)
    wants, out_width = pack_fields([(want[r], case.out.bits)
                                    for case, want, r in zip(cases, expected, rows)])
    pes = SideBySide([case.component() for case in cases])
    result = run_bulk(pes, vectors, wants, width, out_width, build_dir, lanes=1, stall=True)
    print(f"{result.vectors} vectors (x{len(cases)} PEs), {result.mismatches} mismatches, "
          f"{result.rate:.0f} vectors/s in simulation")
    failures = []
    for index, got in result.first:
        shift = 0
        for case, ops, want, r in zip(cases, operands, expected, rows):
            part = (got >> shift) & ((1 << case.out.bits) - 1)
            shift += case.out.bits
            if part != want[r[index]]:
                failures.append(case.describe(ops, r[index], part, int(want[r[index]])))
    assert result.mismatches == 0, "\n".join(failures)


@pytest.mark.sim
def test_mx_dot_sweep_and_random_blocks(tmp_path, seed):
    """Every element pair in every position, every scale corner, output-edge scales, then seeded
    random blocks, for four formats and four pipeline depths at once, under back-pressure."""
    check_side_by_side(CHECKS, RANDOM_BLOCKS, seed, tmp_path / "build")


@pytest.mark.bench
@pytest.mark.sim
def test_mx_dot_other_formats_and_outputs(tmp_path, seed):
    """The two remaining formats, and fixed-point, posit and 8-bit float outputs (whose NaN and
    overflow rules differ), with 200k random blocks each."""
    checks = [("mxfp8_e5m2", "float32", 2), ("mxfp6_e3m2", "bfloat16", 1),
              ("mxint8", "fixed<24,12>", 3), ("mxfp4", "posit(16,1)", 2),
              ("mxfp8_e4m3", "float8_e4m3fn", 4), ("mxfp6_e2m3", "float6_e3m2fn", 1)]
    check_side_by_side(checks, 200_000, seed, tmp_path / "build")


def test_sweep_puts_every_element_pair_in_every_position():
    case = DotCase.parse(["mxfp6_e2m3"], "float32", 1)
    sa, ea, sb, eb = case.exhaustive()
    pairs = 64 * 64
    for position in range(case.k):
        seen = set(zip(ea[:, position].tolist(), eb[:, position].tolist()))
        assert len(seen) == pairs
    assert {0, 1, 127, 254, 255} <= set(sa.tolist()) and {0, 1, 127, 254, 255} <= set(sb.tolist())


def test_sums_reach_past_each_end_of_the_output_range_by_their_width():
    """The dot's corners put sums on every exponent from the output's top to as many binades
    beyond its overflow, and from its smallest step down as many binades as the sums have bits:
    a normalization that misplaces the leading one by up to that many bits shows."""
    case = DotCase.parse(["mxfp4"], "float16", 1)
    sa, ea, sb, eb = case.exhaustive()
    m, e, nan = case.format.block_dot_exact(sa, ea.ravel(), sb, eb.ravel())
    unit = np.full(len(ea), case.bias)
    width = max(abs(int(x)).bit_length()
                for x in case.format.block_dot_exact(unit, ea.ravel(), unit, eb.ravel())[0])
    assert width == (32 * 144).bit_length()            # 32 products of 6 * 6 in units of 1/4
    tops = {int(x) + abs(int(y)).bit_length() - 1 for x, y, z in zip(e, m, nan) if y and not z}
    assert set(range(-24 - 2 - width, -24)) <= tops      # float16: steps of 2**-24, top 2**15
    assert set(range(15, 15 + 2 + width)) <= tops


@pytest.mark.parametrize("out_name, binades", [("float16", range(-24, 16)),
                                                ("bfloat16", range(-133, -120))])
def test_tie_blocks_dot_to_halfway_between_output_neighbours(out_name, binades):
    """The dot's tie blocks sum exactly halfway between two neighbouring output values, below
    an even and an odd code, in every binade from the smallest step up (float16: to the top;
    bfloat16: where 32 mxfp4 products still hold 9 significant bits, its subnormals), both
    signs; others sit just above halfway, one low bit breaking the tie."""
    case = DotCase.parse(["mxfp4"], out_name, 1)
    sa, ea, sb, eb = case._tie_blocks()
    m, e, _ = case.format.block_dot_exact(sa, ea.ravel(), sb, eb.ravel())
    codes = case.out.all_codes()
    values = case.out.decode(codes)
    keep = np.isfinite(values) & (values >= 0) & ((codes >> (case.out.bits - 1)) == 0)
    codes, values = codes[keep], values[keep]
    order = np.argsort(values)
    codes, values = codes[order], np.array([Fraction(float(v)) for v in values[order]])
    seen, signs = set(), set()
    for x, y in zip(m, e):
        exact = Fraction(int(x)) * Fraction(2) ** int(y)
        signs.add(exact > 0)
        place = int(np.searchsorted(values, abs(exact)))
        low, high = values[place - 1], values[place]
        assert low < abs(exact) < high and abs(exact) - low >= (high - low) / 2, exact
        if abs(exact) - low == (high - low) / 2:
            seen.add((low.numerator.bit_length() - low.denominator.bit_length(),
                      int(codes[place - 1]) % 2))
    lowest = (binades[0], 0)                  # the smallest step's binade holds one code, odd
    assert {(b, parity) for b in binades for parity in (0, 1)} - {lowest} <= seen
    assert signs == {True, False}


def test_corner_blocks_sum_to_every_accumulator_bit():
    """Blocks whose exact sums are +-2**j and +-(2**j - 1) product units for every bit j a block
    of 32 mxfp4 products reaches (up to 32 · 36 / 0.25), their products in every position."""
    case = DotCase.parse(["mxfp4"], "bfloat16", 1)
    zero = 0
    ea, eb = case._bit_blocks(zero)
    unit = np.full(len(ea), case.bias)
    m, e, _ = case.format.block_dot_exact(unit, ea.ravel(), unit, eb.ravel())
    sums = {int(x) << int(y + 2) for x, y in zip(m, e)}      # in units of 0.5 * 0.5
    top = (32 * 144).bit_length()
    assert sums == {s * t for j in range(top) for t in (1 << j, (1 << j) - 1) if t for s in (1, -1)}
    assert {int(p) for p in np.flatnonzero((ea != zero).any(axis=0))} == set(range(case.k))


@pytest.mark.parametrize("name, out_name", [("mxfp4", "float16"), ("mxfp8_e4m3", "float32"),
                                            ("mxint8", "float32"), ("mxfp6_e2m3", "bfloat16")])
def test_value_blocks_dot_to_exactly_each_value(name, out_name, seed):
    """Every value value_blocks makes is the exact dot of its block pair (Fractions from the bit
    fields): signs, zero, subnormals and the largest finite values included. The greedy sums
    leave out only values whose significand (in units of the smallest product) is beyond half of
    what k of the largest positive products sum to."""
    print(f"seed {seed}")
    case = DotCase.parse([name], out_name, 1)
    out = case.out
    codes = np.concatenate([random_codes(out, 2000, np.random.default_rng(seed)),
                            corner_codes(out)])
    values = out.decode(codes)
    (sa, ea, sb, eb), made = case.value_blocks(values)
    assert len(made) == len(sa) == len(ea)
    assert (sa < case.scale_nan).all() and (sb < case.scale_nan).all()
    element = case.element
    for row, index in enumerate(made):
        exact = sum(Fraction(float(x)) * Fraction(float(y))
                    for x, y in zip(element.decode(ea[row]), element.decode(eb[row])))
        assert exact * Fraction(2) ** (int(sa[row]) + int(sb[row]) - 2 * case.bias) == \
            Fraction(float(values[index])), (index, values[index])
    finite = set(np.flatnonzero(np.isfinite(values)).tolist())
    left_out = sorted(finite - set(made.tolist()))
    magnitudes = [Fraction(float(x)) for x in element.decode(element.all_codes())
                  if np.isfinite(x) and x > 0]
    reach, smallest = case.k * max(magnitudes) ** 2, min(magnitudes) ** 2
    for index in left_out:     # beyond half of what k of the largest positive products sum to
        significand = Fraction(float(abs(values[index])))
        while significand.denominator > 1:
            significand *= 2
        while significand.numerator % 2 == 0:
            significand /= 2
        assert significand * smallest > reach / 2, (index, values[index])
    signs = np.sign(values[made])
    assert {-1.0, 0.0, 1.0} <= set(signs.tolist())
    print(f"{len(made)} of {len(finite)} finite {out.name} values made by {name} block pairs")


def test_reference_against_exact_fractions(seed):
    """Finite blocks: the case's reference equals the exact sum (Fractions from the bit fields)
    times 2**(sa + sb - 254), rounded by the exact oracle; specials follow the stated rules."""
    print(f"seed {seed}")
    case = DotCase.parse(["mxfp8_e5m2"], "float16", 1)
    sa, ea, sb, eb = case.random(300, seed)
    want = case.reference((sa, ea, sb, eb))
    element, out = case.element, case.out
    checked = 0
    for row in range(len(sa)):
        values = [(value(element, int(x)), value(element, int(y))) for x, y in zip(ea[row], eb[row])]
        if sa[row] == 255 or sb[row] == 255 or any(isinstance(v, str) for pair in values for v in pair):
            continue
        exact = sum(x * y for x, y in values) * Fraction(2) ** (int(sa[row]) + int(sb[row]) - 254)
        assert round_float(out, exact) == want[row], row
        checked += 1
    assert checked > 200


def test_reference_special_rules():
    case = DotCase.parse(["mxfp8_e5m2"], "float32", 1)
    e = case.element
    zero, one, inf, nan = (int(e.encode(np.array([v]))[0]) for v in (0.0, 1.0, np.inf, np.nan))
    neg_inf = int(e.encode(np.array([-np.inf]))[0])

    def block(*codes):
        return np.array([list(codes) + [zero] * (case.k - len(codes))], dtype=np.uint64)

    def result(a, b, sa=127, sb=127):
        got = case.reference((np.array([sa], dtype=np.uint64), a, np.array([sb], dtype=np.uint64), b))
        return case.out.decode(got)[0]

    assert np.isnan(result(block(one), block(one), sa=255))           # NaN scale
    assert np.isnan(result(block(nan), block(one)))                   # NaN element
    assert np.isnan(result(block(inf, neg_inf), block(one, one)))     # +inf with -inf
    assert np.isnan(result(block(inf), block(zero)))                  # inf * 0
    assert result(block(inf, one), block(one, one), sa=0) == np.inf   # no scale tames inf
    assert result(block(one, one), block(one, neg_inf)) == -np.inf
    assert np.copysign(1, result(block(one), block(zero))) == 1       # exact zero is +0
    finite_out = DotCase.parse(["mxfp4"], "float6_e2m3fn", 1)
    ones = np.full((1, 32), int(finite_out.element.encode(np.array([1.0]))[0]), dtype=np.uint64)
    assert finite_out.reference((np.array([255], dtype=np.uint64), ones,
                                 np.array([127], dtype=np.uint64), ones))[0] == 0


def test_describe_uses_format_notation():
    case = DotCase.parse(["mxfp4"], "float32", 1)
    ea = np.zeros((1, 32), dtype=np.uint64)
    ea[0, :2] = [0x2, 0xa]
    operands = (np.array([130], dtype=np.uint64), ea, np.array([126], dtype=np.uint64), ea.copy())
    text = case.describe(operands, 0, 0x3f800000, 0x40000000)
    assert text.startswith("mxfp4 block (scale 2^3 · 2^-1) a=[2 a 0 0")
    assert text.endswith("→ got 0x3f800000 (1), expected 0x40000000 (2)")


@pytest.mark.parametrize("args, message", [
    (("nvfp4",), "float8_e4m3fn scales are not powers of two"),
    (("float8_e4m3fn",), "expected an MX block format"),
    (("mxfp8_e4m3", "mxfp4"), "rounds to a float, integer, fixed-point or posit format"),
    (("mxfp8_e4m3", "float32", 5), "stages=5"),
])
def test_bad_parameters_are_one_sentence(args, message):
    name, out, stages = (list(args) + ["float32", 1][len(args) - 1:])[:3]
    with pytest.raises(SpecError, match=message):
        MXDotPE(name, out, stages=stages)


def test_verilog_is_deterministic_and_sized():
    pe = MXDotPE("mxfp4", "bfloat16", stages=3)
    assert (pe.latency, pe.acc_lsb) == (3, -2)
    assert pe.acc_bits == 1 + (32 * 6 * 6 * 4).bit_length()      # 32 products of +-6, LSB 2**-2
    layout = data.Layout.cast(pe.i.payload.shape())
    assert layout.size == 2 * 32 * 4 + 16 and len(pe.o.payload) == 16
    assert to_verilog(pe) == to_verilog(MXDotPE(parse_format("mxfp4"), "bfloat16", stages=3))
