"""The bulk checker itself: it passes a correct design, and finds one planted wrong vector exactly."""
import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from forma.sim.bulk import run_bulk


class Add8(wiring.Component):
    """Registered 8-bit wrapping adder with a stream interface; `bug` corrupts one input pair."""

    def __init__(self, bug=None):
        self.bug = bug
        pair = data.StructLayout({"a": 8, "b": 8})
        super().__init__({"i": In(stream.Signature(pair)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        a, b = self.i.payload.a, self.i.payload.b
        wrong = (a == self.bug[0]) & (b == self.bug[1]) if self.bug else 0
        m.d.comb += self.i.ready.eq(advance)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(a + b + wrong)]
        return m


def all_pairs():
    vectors = np.arange(1 << 16, dtype=np.uint64)
    return vectors, ((vectors & 255) + (vectors >> 8)) & 255


@pytest.mark.sim
@pytest.mark.parametrize("stall", [False, True])
def test_exhaustive_pass_with_and_without_back_pressure(tmp_path, stall):
    vectors, expected = all_pairs()
    result = run_bulk(Add8(), vectors, expected, 16, 8, tmp_path, lanes=8, stall=stall)
    assert (result.vectors, result.mismatches, result.first) == (65536, 0, [])


@pytest.mark.sim
def test_single_wrong_vector_is_found_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("FORMA_NO_WAVES", "1")
    vectors, expected = all_pairs()
    result = run_bulk(Add8(bug=(77, 3)), vectors, expected, 16, 8, tmp_path, lanes=8)
    assert result.mismatches == 1
    assert result.first == [(3 * 256 + 77, 81)]
