"""DSP packing: factor choice and errors, and the packed multiplier proven exhaustively.

On Verilator: int8 x (int8, int8) through a 27-bit multiplier (DSP48-style), every (a, w0) with
random w1 (all 2**24 in the bench run), and every (a, w0, w1) of int8 x (int4, int4) and of the
mixed-sign 8 x 4-bit pairs through an 18-bit one; smaller cases run exhaustively in Amaranth's
simulator.
"""
import itertools

import numpy as np
import pytest
from amaranth import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from forma.errors import SpecError
from forma.hdl.packing import PackedMultiplier, choose_packing, max_factor
from forma.sim.bulk import run_bulk
from forma.sim.formats import parse_format

F = parse_format


class PackedBank(wiring.Component):
    """Several packed multipliers fed from one input word, their products side by side.

    Config (a, w, factor, multiplier bits) reads a from the word's low bits, then each w_i;
    its products follow the previous config's in the output word.
    """

    def __init__(self, configs):
        self.units = [PackedMultiplier(F(a), F(w), n, multiplier_bits=bits)
                      for a, w, n, bits in configs]
        in_bits = max(u.plan.a_format.bits + u.plan.factor * u.plan.w_format.bits
                      for u in self.units)
        out_bits = sum(u.plan.factor * u.plan.shift for u in self.units)
        super().__init__({"i": In(stream.Signature(in_bits)),
                          "o": Out(stream.Signature(out_bits))})

    def elaborate(self, platform):
        m = Module()
        for index, unit in enumerate(self.units):
            m.submodules[f"unit_{index}"] = unit
            width = unit.plan.a_format.bits + unit.plan.factor * unit.plan.w_format.bits
            m.d.comb += [unit.i.payload.eq(self.i.payload[:width]),
                         unit.i.valid.eq(self.i.valid), unit.o.ready.eq(self.o.ready)]
        first = self.units[0]
        m.d.comb += [self.i.ready.eq(first.i.ready), self.o.valid.eq(first.o.valid),
                     self.o.payload.eq(Cat(u.o.payload for u in self.units))]
        return m


def _field(index, offset, fmt):
    raw = index >> offset & ((1 << fmt.bits) - 1)
    return np.where(raw >> (fmt.bits - 1) & 1, raw - (1 << fmt.bits), raw) if fmt.signed else raw


def _bank_expected(bank, index):
    """The packed products every unit of `bank` must give for input words `index`."""
    expected, shift = np.zeros_like(index), 0
    for unit in bank.units:
        plan = unit.plan
        a = _field(index, 0, plan.a_format)
        for k in range(plan.factor):
            w = _field(index, plan.a_format.bits + k * plan.w_format.bits, plan.w_format)
            expected |= ((a * w) & ((1 << plan.shift) - 1)) << shift
            shift += plan.shift
    return expected


INT8_PAIRS = [("int8", "int8", 2, 27), ("int8", "int4", 2, 18)]
MIXED_SIGN = [("uint8", "int4", 2, 18), ("int8", "uint4", 2, 18)]


def _check_bank(configs, words, tmp_path, note):
    bank = PackedBank(configs)
    in_bits, out_bits = len(bank.i.payload), len(bank.o.payload)
    expected = _bank_expected(bank, words)
    result = run_bulk(bank, words.astype(np.uint64), expected.astype(np.uint64), in_bits,
                      out_bits, tmp_path, lanes=8, stall=True)
    first = [(hex(int(words[i])), hex(got), hex(int(expected[i]))) for i, got in result.first]
    assert result.mismatches == 0, (f"{configs} ({note}): {result.mismatches} mismatches; "
                                    f"first (input, got, expected): {first}")
    assert result.vectors == len(words)


@pytest.mark.sim
def test_int8_pairs_on_verilator(seed, tmp_path):
    """Every (a, w0) with 4 random w1 each for int8 x int8 at 27 bits; every (a, w0, w1) for
    int8 x int4 at 18 bits (its operands are the low 16 bits, which run through all values)."""
    rng = np.random.default_rng(seed)
    low = np.tile(np.arange(1 << 16, dtype=np.int64), 4)
    words = low | rng.integers(0, 256, len(low)) << 16
    _check_bank(INT8_PAIRS, words, tmp_path, f"seed {seed}")


@pytest.mark.sim
def test_mixed_sign_pairs_exhaustive_on_verilator(tmp_path):
    _check_bank(MIXED_SIGN, np.arange(1 << 16, dtype=np.int64), tmp_path, "exhaustive")


@pytest.mark.sim
@pytest.mark.bench
def test_int8_pairs_fully_exhaustive_on_verilator(tmp_path):
    """All 2**24 (a, w0, w1) of int8 x int8 (about 2 minutes)."""
    _check_bank(INT8_PAIRS, np.arange(1 << 24, dtype=np.int64), tmp_path, "exhaustive")


@pytest.mark.parametrize("a, w, factor, bits", [
    ("int8", "int2", 2, 18),
    ("int8", "int2_narrow", 2, 18), ("int2", "int2", 4, 18), ("uint4", "uint4", 2, 18),
    ("int4", "int4", 2, 16), ("int8", "int2", 3, 27),
])
def test_packed_multiplier_exhaustive_small(a, w, factor, bits):
    a_fmt, w_fmt = F(a), F(w)
    dut = PackedMultiplier(a_fmt, w_fmt, factor, multiplier_bits=bits)
    a_values = range(a_fmt.raw_min, a_fmt.raw_max + 1)
    w_tuples = list(itertools.product(range(w_fmt.raw_min, w_fmt.raw_max + 1), repeat=factor))
    bad = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for x in a_values:
            for ws in w_tuples:
                ctx.set(dut.i.payload.a, x)
                ctx.set(dut.i.payload.w, list(ws))
                await ctx.tick()
                got = [ctx.get(dut.o.payload[k]) for k in range(factor)]
                if got != [x * v for v in ws] and len(bad) < 3:
                    bad.append((x, ws, got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{a} x {w} packed {factor}: (a, w, got) {bad}"


@pytest.mark.parametrize("a, w, bits, factor", [
    ("int8", "int8", 18, 1),    # two 16-bit products need a 25-bit packed operand
    ("int8", "int8", 27, 2),    # DSP48E2-style 27 x 18
    ("int8", "int4", 18, 2),    # W = w1 * 2**12 + w0 needs 17 bits with the borrow
    ("int8", "int4", 16, 1),    # iCE40 SB_MAC16: 17 bits do not fit
    ("int8", "int2", 18, 2),
    ("int2", "int2", 18, 4),
    ("uint1", "uint1", 18, 8),
])
def test_max_factor(a, w, bits, factor):
    assert max_factor(F(a), F(w), bits) == factor


def test_auto_divides_the_columns_and_off_is_one():
    assert choose_packing(F("int8"), F("int4"), "auto", 3).factor == 1
    assert choose_packing(F("int8"), F("int4"), "auto", 4).factor == 2
    assert choose_packing(F("int2"), F("int2"), "auto", 6).factor == 3
    assert choose_packing(F("int2"), F("int2"), "off", 8).factor == 1


@pytest.mark.parametrize("a, w, packing, cols, words", [
    ("int8", "int8", "2", 8, "packing=2: 2 products int8 x int8 need at least a 24-bit"),
    ("int8", "int4", 4, 8, "at most 2 fit"),
    ("int8", "int4", 2, 3, "must divide the 3 columns"),
    ("int8", "int4", "fast", 4, "packing=fast: use auto, off or a factor"),
    ("int8", "int4", 0, 4, "packing=0"),
])
def test_bad_packing_names_the_parameter(a, w, packing, cols, words):
    with pytest.raises(SpecError, match=words):
        choose_packing(F(a), F(w), packing, cols)
