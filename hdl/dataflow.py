"""Folded dataflow engines for quantized networks: per layer a buffered MAC or max engine.

Each engine loads one input vector from a valid/ready stream, computes its outputs with `lanes`
parallel MACs over weight ROMs, requantizes them exactly and streams them out in order.
"""
from dataclasses import dataclass, field

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from .mac import holding_format, int_shape

#: up-rounding decision per rounding mode, from (remainder > half, == half, != 0, negative, odd)
ROUND_UP = {
    "rne": lambda gt, eq, nz, neg, odd: gt | (eq & odd),
    "floor": lambda gt, eq, nz, neg, odd: 0,
    "ceil": lambda gt, eq, nz, neg, odd: nz,
    "trunc": lambda gt, eq, nz, neg, odd: nz & neg,
    "away": lambda gt, eq, nz, neg, odd: nz & ~neg,
    "half_away": lambda gt, eq, nz, neg, odd: gt | (eq & ~neg),
    "half_zero": lambda gt, eq, nz, neg, odd: gt | (eq & neg),
    "half_up": lambda gt, eq, nz, neg, odd: gt | eq,
    "half_down": lambda gt, eq, nz, neg, odd: gt,
}
PIPELINE = 3  # cycles from issuing the last product of a group to its sum in the accumulators


@dataclass(frozen=True)
class Requantize:
    """out = clamp(round(in * multiplier / 2**shift), lo, hi), `rounding` a forma rounding name;
    shift < 0 is an exact left shift; saturate=False wraps into `bits` instead of clamping."""
    shift: int
    multiplier: int
    rounding: str
    lo: int
    hi: int
    saturate: bool = True

    def __post_init__(self):
        if self.rounding not in ROUND_UP:
            raise SpecError(f"rounding '{self.rounding}' has no requantizer; use one of "
                            f"{', '.join(ROUND_UP)}")

    def hardware(self, value):
        """The requantized Amaranth value of the signed integer `value`."""
        if self.multiplier != 1:
            value = value * self.multiplier
        if self.shift <= 0:
            q = value << -self.shift
        else:
            q = value >> self.shift  # arithmetic: floor
            rem = value[:self.shift]
            half = 1 << (self.shift - 1)
            q = q + ROUND_UP[self.rounding](rem > half, rem == half, rem != 0, q < 0, q[0])
        if not self.saturate:
            bits = max(self.lo.bit_length(), self.hi.bit_length()) + (self.lo < 0)
            return q[:bits].as_signed() if self.lo < 0 else q[:bits]
        return Mux(q < self.lo, self.lo, Mux(q > self.hi, self.hi, q))

    def reference(self, value: np.ndarray) -> np.ndarray:
        """The same on int64 numpy arrays."""
        from ..sim.formats.base import round_shift
        v = np.asarray(value, np.int64) * self.multiplier
        q = v << -self.shift if self.shift <= 0 else round_shift(v, self.shift, self.rounding)
        if not self.saturate:
            span = self.hi - self.lo + 1
            return (q - self.lo) % span + self.lo
        return np.clip(q, self.lo, self.hi)


RELU = "relu"


@dataclass(eq=False)
class EngineSpec:
    """One engine of the dataflow (all integers are raw values, in the stated formats).

    kind 'mac': out[p, m] = epilogue(bias[m] + sum_k x[gather[p, k]] * weight[k, m]); 'max':
    out[p] = epilogue(max_k x[gather[p, k]]). gather -1 is padding (0 for mac, skipped for max);
    gather None means one position reading x[0..in_size-1]. `decode` maps input codes to raw
    values (None: the code is the raw value of `in_shape`). Outputs stream position-major, then m.
    """
    kind: str
    name: str
    in_shape: object
    in_size: int
    out_shape: object
    gather: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    epilogue: list = field(default_factory=list)
    lanes: int = 1
    decode: tuple | None = None

    @property
    def positions(self):
        return 1 if self.gather is None else self.gather.shape[0]

    @property
    def reduction(self):
        return self.in_size if self.gather is None else self.gather.shape[1]

    @property
    def channels(self):
        return self.weight.shape[1] if self.kind == "mac" else 1

    @property
    def groups(self):
        return self.channels // self.lanes

    @property
    def outputs(self):
        return self.positions * self.channels

    def cycles(self, lanes=None):
        """Cycles one inference keeps the engine busy: loading plus computing and draining."""
        lanes = lanes or self.lanes
        per_group = self.reduction + PIPELINE + lanes
        return self.in_size + self.positions * (self.channels // lanes) * per_group

    def x_range(self):
        if self.decode is not None:
            return min(self.decode), max(self.decode)
        shape = self.in_shape
        return (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
            else (0, (1 << shape.width) - 1)

    def acc_shape(self):
        """Holds every partial sum for any input (mac), or the input values (max)."""
        lo, hi = self.x_range()
        if self.kind == "max":
            return int_shape(holding_format(lo, hi))
        w = self.weight.astype(np.int64)
        bias = np.zeros(w.shape[1], np.int64) if self.bias is None else self.bias.astype(np.int64)
        low, high = np.minimum(w * lo, w * hi), np.maximum(w * lo, w * hi)
        top = bias + np.sum(np.maximum(high, 0), axis=0)
        bot = bias + np.sum(np.minimum(low, 0), axis=0)
        return signed(max(2, holding_format(int(min(bot.min(), 0)), int(top.max())).bits + 1))

    def weight_bits(self):
        w = self.weight
        return int_shape(holding_format(int(min(w.min(), 0)), int(max(w.max(), 0)))).width + 1

    def validate(self):
        if self.kind not in ("mac", "max"):
            raise SpecError(f"engine {self.name}: kind '{self.kind}' must be mac or max")
        if self.kind == "max" and self.lanes != 1:
            raise SpecError(f"engine {self.name}: max engines have one lane, not {self.lanes}")
        if self.channels % self.lanes:
            raise SpecError(f"engine {self.name}: lanes={self.lanes} must divide the "
                            f"{self.channels} output channels")

    def reference(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs (int64, [outputs]) for raw inputs x ([in_size]) in the engine's order."""
        x = np.asarray(x, np.int64)
        if self.decode is not None:
            x = np.asarray(self.decode, np.int64)[x]
        gather = np.arange(self.in_size)[None] if self.gather is None else self.gather
        if self.kind == "mac":
            xs = np.where(gather >= 0, x[np.maximum(gather, 0)], 0)
            bias = 0 if self.bias is None else self.bias.astype(np.int64)
            out = (xs @ self.weight.astype(np.int64) + bias).ravel()
        else:
            xs = np.where(gather >= 0, x[np.maximum(gather, 0)], np.iinfo(np.int64).min)
            out = xs.max(axis=1)
        for op in self.epilogue:
            out = np.maximum(out, 0) if op == RELU else op.reference(out)
        return out


def _apply_epilogue(spec, value):
    for op in spec.epilogue:
        value = Mux(value < 0, 0, value) if op == RELU else op.hardware(value)
    return value


class LayerEngine(wiring.Component):
    """One layer: load `in_size` inputs, then for each position and group of `lanes` output
    channels stream K products through the MAC lanes (or a max), then drain the lanes in order.

    Latency/throughput: `spec.cycles()` per inference; no input is accepted while computing.
    """

    def __init__(self, spec: EngineSpec):
        spec.validate()
        self.spec = spec
        super().__init__({"i": In(stream.Signature(spec.in_shape)),
                          "o": Out(stream.Signature(spec.out_shape))})

    def elaborate(self, platform):
        s = self.spec
        m = Module()
        K, P, size = s.reduction, s.lanes, s.in_size
        acc_shape = s.acc_shape()

        m.submodules.buffer = buffer = Memory(shape=s.in_shape, depth=size, init=[])
        wr, rd = buffer.write_port(), buffer.read_port()

        count = Signal(range(max(size, 2)))  # load counter
        k = Signal(range(max(K, 2)))
        g = Signal(range(max(s.groups, 2)))
        p = Signal(range(max(s.positions, 2)))
        gidx = Signal(range(max(s.positions * K, 2)))
        widx = Signal(range(max(s.groups * K, 2)))
        lane = Signal(range(max(P, 2)))
        wait = Signal(range(PIPELINE))
        issue = Signal()
        # pipeline flags: stage 1 (addresses resolved), stage 2 (operands ready)
        v1, first1, v2, first2, pad2 = (Signal(name=n) for n in ("v1", "first1", "v2", "first2",
                                                                   "pad2"))
        m.d.sync += [v1.eq(issue), first1.eq(k == 0), v2.eq(v1), first2.eq(first1)]

        # stage 1: the input address, from the gather ROM or the counter itself
        if s.gather is None:
            addr1 = Signal.like(gidx)
            m.d.sync += addr1.eq(gidx)
            m.d.comb += rd.addr.eq(addr1)
            m.d.sync += pad2.eq(0)
        else:
            abits = max(1, (size - 1).bit_length())
            table = [(1 << abits) if a < 0 else int(a) for a in s.gather.ravel()]
            m.submodules.gather = gather = Memory(shape=unsigned(abits + 1), depth=len(table),
                                                  init=table)
            grd = gather.read_port()
            m.d.comb += [grd.addr.eq(gidx), rd.addr.eq(grd.data[:abits])]
            m.d.sync += pad2.eq(grd.data[abits])

        x = Signal(acc_shape if s.kind == "max" else _x_shape(s))
        raw = rd.data
        if s.decode is not None:
            from amaranth.hdl import Array
            raw = Array(s.decode)[rd.data]
        lo = s.x_range()[0]
        m.d.comb += x.eq(Mux(pad2, lo if s.kind == "max" else 0, raw))

        accs = [Signal(acc_shape, name=f"acc{l}") for l in range(P)]
        if s.kind == "mac":
            self._mac(m, s, accs, x, widx, g, v2, first2)
        else:
            x3, v3, first3 = Signal.like(x), Signal(), Signal()
            m.d.sync += [x3.eq(x), v3.eq(v2), first3.eq(first2)]
            with m.If(v3):
                m.d.sync += accs[0].eq(Mux(first3 | (x3 > accs[0]), x3, accs[0]))

        m.d.comb += self.o.payload.eq(_apply_epilogue(s, accs[0]))
        m.d.comb += [wr.addr.eq(count), wr.data.eq(self.i.payload)]
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), wr.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == size - 1):
                        m.d.sync += [count.eq(0), k.eq(0), g.eq(0), p.eq(0), gidx.eq(0),
                                     widx.eq(0)]
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += issue.eq(1)
                m.d.sync += [k.eq(k + 1), gidx.eq(gidx + 1), widx.eq(widx + 1)]
                with m.If(k == K - 1):
                    m.d.sync += [k.eq(0), wait.eq(0)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == PIPELINE - 1):
                    m.d.sync += lane.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += [a.eq(b) for a, b in zip(accs, accs[1:])]
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == P - 1):
                        self._next_group(m, s, g, p, gidx, widx)
        return m

    def _mac(self, m, s, accs, x, widx, g, v2, first2):
        P, wb = s.lanes, s.weight_bits()
        K = s.reduction
        mask = (1 << wb) - 1
        w = s.weight.astype(np.int64)
        words = [sum((int(w[k, g * P + l]) & mask) << (l * wb) for l in range(P))
                 for g in range(s.groups) for k in range(K)]
        m.submodules.weights = rom = Memory(shape=unsigned(P * wb), depth=len(words), init=words)
        wrd = rom.read_port()
        m.d.comb += wrd.addr.eq(widx)
        w2 = Signal(P * wb)
        m.d.sync += w2.eq(wrd.data)
        bias2 = [0] * P
        if s.bias is not None:
            abits = s.acc_shape().width
            amask = (1 << abits) - 1
            b = s.bias.astype(np.int64)
            bwords = [sum((int(b[g * P + l]) & amask) << (l * abits) for l in range(P))
                      for g in range(s.groups)]
            m.submodules.bias = brom = Memory(shape=unsigned(P * abits), depth=len(bwords),
                                              init=bwords)
            brd = brom.read_port()
            g1 = Signal.like(g)
            m.d.sync += g1.eq(g)
            m.d.comb += brd.addr.eq(g1)
            bias2 = [brd.data[l * abits:(l + 1) * abits].as_signed() for l in range(P)]
        # stage 3: registered products (the multipliers' output registers), then accumulate
        v3, first3 = Signal(), Signal()
        m.d.sync += [v3.eq(v2), first3.eq(first2)]
        for l, acc in enumerate(accs):
            product = Signal(signed(len(x) + wb), name=f"product{l}")
            bias3 = Signal.like(acc, name=f"bias{l}")
            m.d.sync += [product.eq(x * w2[l * wb:(l + 1) * wb].as_signed()), bias3.eq(bias2[l])]
            with m.If(v3):
                m.d.sync += acc.eq(Mux(first3, bias3, acc) + product)

    def _next_group(self, m, s, g, p, gidx, widx):
        K = s.reduction
        last_group = g == s.groups - 1
        with m.If(~last_group):
            m.d.sync += [g.eq(g + 1), gidx.eq(gidx - K)]  # same position, next channels
            m.next = "ISSUE"
        with m.Elif(p == s.positions - 1):
            m.next = "LOAD"
        with m.Else():
            m.d.sync += [g.eq(0), p.eq(p + 1), widx.eq(0)]
            m.next = "ISSUE"


def _x_shape(spec):
    lo, hi = spec.x_range()
    return int_shape(holding_format(lo, hi))


class StreamNetwork(wiring.Component):
    """The engines chained by valid/ready streams: input codes in, output codes out, in order."""

    def __init__(self, specs):
        if not specs:
            raise SpecError("the network has no compute layer to map onto engines")
        self.specs = list(specs)
        super().__init__({"i": In(stream.Signature(specs[0].in_shape)),
                          "o": Out(stream.Signature(specs[-1].out_shape))})

    def elaborate(self, platform):
        m = Module()
        engines = [LayerEngine(spec) for spec in self.specs]
        for index, engine in enumerate(engines):
            m.submodules[f"engine{index}"] = engine
        wiring.connect(m, wiring.flipped(self.i), engines[0].i)
        for a, b in zip(engines, engines[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, engines[-1].o, wiring.flipped(self.o))
        return m
