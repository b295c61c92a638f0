"""Folded dataflow engines for quantized networks: per layer a buffered MAC or max engine.

Each engine loads one input vector from a valid/ready stream, computes its outputs with `lanes`
parallel MACs over weight ROMs, requantizes them exactly and streams them out in order.
"""
from dataclasses import dataclass, field

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
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
    """out = clamp(round((in * multiplier + offset) / 2**shift), lo, hi), `rounding` a forma
    rounding name; shift < 0 is an exact left shift; saturate=False wraps into `bits` instead of
    clamping."""
    shift: int
    multiplier: int
    rounding: str
    lo: int
    hi: int
    saturate: bool = True
    offset: int = 0

    def __post_init__(self):
        if self.rounding not in ROUND_UP:
            raise SpecError(f"rounding '{self.rounding}' has no requantizer; use one of "
                            f"{', '.join(ROUND_UP)}")

    def hardware(self, m, value):
        """The requantized Amaranth value of the signed integer `value`."""
        if self.multiplier != 1:
            value = value * self.multiplier
        if self.offset:
            value = value + self.offset
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
        v = np.asarray(value, np.int64) * self.multiplier + self.offset
        q = v << -self.shift if self.shift <= 0 else round_shift(v, self.shift, self.rounding)
        if not self.saturate:
            span = self.hi - self.lo + 1
            return (q - self.lo) % span + self.lo
        return np.clip(q, self.lo, self.hi)


@dataclass(frozen=True)
class MinifloatRequantize:
    """out = the `format` code of in * 2**-frac_bits: one round-to-nearest-even, saturating to
    +-max_value when `saturate` (else the format's overflow code), as `format.encode` computes."""
    format: object
    frac_bits: int
    saturate: bool = True

    #: register stages when pipelined: sign/magnitude, then the encoder's two cut points
    LATENCY = 3

    def hardware(self, m, value, advance=None):
        """The code (unsigned, format.bits wide) of the signed integer `value`: combinational, or
        with `advance` (1 bit) a pipeline of LATENCY register stages loading while it is 1."""
        from .float_units import FloatEncoder, signed_bits
        width = len(value)
        encoder = FloatEncoder(self.format, width, signed_bits(-self.frac_bits, -self.frac_bits),
                               saturate=self.saturate,
                               cuts=FloatEncoder.CUTS if advance is not None else ())
        m.submodules.encoder = encoder
        negative, magnitude, zero = value < 0, Mux(value < 0, -value, value), value == 0
        if advance is not None:
            staged = Signal(name="rq_negative"), Signal(width, name="rq_magnitude"), \
                Signal(name="rq_zero")
            with m.If(advance):
                m.d.sync += [r.eq(v) for r, v in zip(staged, (negative, magnitude, zero))]
            negative, magnitude, zero = staged
            m.d.comb += encoder.advance.eq(advance)
        m.d.comb += [encoder.value.sign.eq(negative), encoder.value.sig.eq(magnitude),
                     encoder.value.exp.eq(-self.frac_bits), encoder.value.zero.eq(zero)]
        return encoder.code

    def reference(self, value: np.ndarray) -> np.ndarray:
        v = np.asarray(value, np.int64).astype(np.float64) * 2.0 ** -self.frac_bits
        return self.format.encode(v, rounding="rne", saturate=self.saturate).astype(np.int64)


@dataclass(frozen=True)
class BipolarSign:
    """out = +1 where in >= 0, else -1 (a signed 2-bit raw): QONNX's BipolarQuant of the value."""

    def hardware(self, m, value):
        return Mux(value < 0, -1, 1)

    def reference(self, value: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(value, np.int64) < 0, -1, 1).astype(np.int64)


RELU = "relu"


@dataclass(eq=False)
class EngineSpec:
    """One engine of the dataflow (all integers are raw values, in the stated formats).

    kind 'mac': out[p, m] = epilogue(bias[m] + sum_k x[gather[p, k]] * weight[k, m]); 'max':
    out[p] = epilogue(max_k x[gather[p, k]]); 'sum': out[p] = epilogue(sum_k x[gather[p, k]]);
    'copy': out[p] = x[gather[p, 0]] (a reordering); 'add': out[i] = epilogue((x[i] << align[0])
    + (y[i] << align[1])) with y the stream of engine `skip` (-1: the network input), buffered in
    a FIFO of `skip_depth` values. gather -1 is padding (0 for mac/sum, skipped for max); gather
    None means one position reading x[0..in_size-1]. `decode`/`skip_decode` map input codes to
    raw values (None: the code is the raw value of its shape). Outputs stream position-major,
    then m. `source` is the engine whose output is x (-1: the network input).
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
    source: int = -1
    skip: int | None = None
    skip_shape: object = None
    skip_decode: tuple | None = None
    skip_depth: int = 0
    align: tuple = (0, 0)

    @property
    def positions(self):
        if self.kind == "add":
            return self.in_size
        return 1 if self.gather is None else self.gather.shape[0]

    @property
    def reduction(self):
        if self.kind == "add":
            return 1
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

    def compute_cycles(self, lanes=None):
        """Cycles from a loaded input to its last output streamed (no back-pressure)."""
        if self.kind == "add":
            return self.in_size
        lanes = lanes or self.lanes
        return self.positions * (self.channels // lanes) * (self.reduction + PIPELINE + lanes) + 1

    def epilogue_latency(self):
        """Register stages of the epilogue (a minifloat requantizer is pipelined in LayerEngines)."""
        if self.kind == "add":
            return 0
        return sum(op.LATENCY for op in self.epilogue if isinstance(op, MinifloatRequantize))

    def cycles(self, lanes=None):
        """Cycles one inference spends in the engine: loading, then computing and draining."""
        return self.compute_cycles(lanes) if self.kind == "add" else \
            self.in_size + self.compute_cycles(lanes) + self.epilogue_latency()

    def interval(self, lanes=None):
        """Cycles between inferences in steady state: the input buffer is double-buffered, so
        loading the next input overlaps computing this one."""
        return max(self.in_size, self.compute_cycles(lanes))

    def x_range(self):
        return _code_range(self.in_shape, self.decode)

    def acc_shape(self):
        """Holds every partial sum for any input (mac, sum, add), or the input values (max, copy)."""
        lo, hi = self.x_range()
        if self.kind in ("max", "copy"):
            return int_shape(holding_format(lo, hi))
        if self.kind == "sum":
            k = self.reduction
            return int_shape(holding_format(min(lo * k, 0), max(hi * k, 0)))
        if self.kind == "add":
            ylo, yhi = _code_range(self.skip_shape, self.skip_decode)
            a, b = self.align
            return int_shape(holding_format(min((lo << a) + (ylo << b), 0),
                                            max((hi << a) + (yhi << b), 0)))
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
        if self.kind not in ENGINE_KINDS:
            raise SpecError(f"engine {self.name}: kind '{self.kind}' must be one of "
                            f"{', '.join(ENGINE_KINDS)}")
        if self.kind != "mac" and self.lanes != 1:
            raise SpecError(f"engine {self.name}: {self.kind} engines have one lane, not "
                            f"{self.lanes}")
        if self.channels % self.lanes:
            raise SpecError(f"engine {self.name}: lanes={self.lanes} must divide the "
                            f"{self.channels} output channels")
        if self.kind == "add" and (self.skip is None or self.skip_depth < 1):
            raise SpecError(f"engine {self.name}: an add engine needs a skip source and a skip "
                            "FIFO depth >= 1")
        if self.kind == "copy" and (self.gather is None or self.gather.shape[1] != 1):
            raise SpecError(f"engine {self.name}: a copy engine needs a gather of one address "
                            "per output")

    def reference(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Raw outputs (int64, [outputs]) for raw inputs x ([in_size]) in the engine's order;
        `y` is the skip input of an add engine."""
        x = np.asarray(x, np.int64)
        if self.decode is not None:
            x = np.asarray(self.decode, np.int64)[x]
        if self.kind == "add":
            y = np.asarray(y, np.int64)
            if self.skip_decode is not None:
                y = np.asarray(self.skip_decode, np.int64)[y]
            out = (x << self.align[0]) + (y << self.align[1])
            return _epilogue_reference(self, out)
        gather = np.arange(self.in_size)[None] if self.gather is None else self.gather
        if self.kind == "mac":
            xs = np.where(gather >= 0, x[np.maximum(gather, 0)], 0)
            bias = 0 if self.bias is None else self.bias.astype(np.int64)
            out = (xs @ self.weight.astype(np.int64) + bias).ravel()
        elif self.kind == "sum":
            out = np.where(gather >= 0, x[np.maximum(gather, 0)], 0).sum(axis=1)
        elif self.kind == "copy":
            out = x[gather[:, 0]]
        else:
            xs = np.where(gather >= 0, x[np.maximum(gather, 0)], np.iinfo(np.int64).min)
            out = xs.max(axis=1)
        return _epilogue_reference(self, out)


ENGINE_KINDS = ("mac", "max", "sum", "copy", "add")


def _code_range(shape, decode):
    if decode is not None:
        return min(decode), max(decode)
    return (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)


def _epilogue_reference(spec, out):
    for op in spec.epilogue:
        out = np.maximum(out, 0) if op == RELU else op.reference(out)
    return out


def _apply_epilogue(m, spec, value, advance=None):
    """The epilogue of `value`; `advance` enables the pipelined requantizer's stages."""
    for op in spec.epilogue:
        if op == RELU:
            value = Mux(value < 0, 0, value)
        elif isinstance(op, MinifloatRequantize):
            value = op.hardware(m, value, advance)
        else:
            value = op.hardware(m, value)
    return value


def _decoded(spec_decode, code):
    """Raw value of `code` through a decode table (the code itself without one)."""
    if spec_decode is None:
        return code
    from amaranth.hdl import Array
    return Array(spec_decode)[code]


class LayerEngine(wiring.Component):
    """One layer: load `in_size` inputs into one half of a double buffer while the other half is
    computed: for each position and group of `lanes` output channels stream K products through
    the MAC lanes (or a max/sum/copy), then drain the lanes in order.

    Throughput: one inference per `spec.interval()` cycles; latency `spec.cycles()`.
    """

    def __init__(self, spec: EngineSpec):
        spec.validate()
        if spec.kind == "add":
            raise SpecError(f"engine {spec.name}: add engines are AddEngine components")
        self.spec = spec
        super().__init__({"i": In(stream.Signature(spec.in_shape)),
                          "o": Out(stream.Signature(spec.out_shape))})

    def elaborate(self, platform):
        s = self.spec
        m = Module()
        K, P, size = s.reduction, s.lanes, s.in_size
        acc_shape = s.acc_shape()

        # two banks: the loader fills bank `wbank` while the compute side reads bank `rbank`
        m.submodules.buffer = buffer = Memory(shape=s.in_shape, depth=2 * size, init=[])
        wr, rd = buffer.write_port(), buffer.read_port()
        full = Signal(2)
        wbank, rbank = Signal(), Signal()
        loaded, computed = Signal(), Signal()
        m.d.sync += full.eq((full | (loaded << wbank)) & ~(computed << rbank))
        base = Mux(rbank, size, 0)

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
            m.d.comb += rd.addr.eq(base + addr1)
            m.d.sync += pad2.eq(0)
        else:
            abits = max(1, (size - 1).bit_length())
            table = [(1 << abits) if a < 0 else int(a) for a in s.gather.ravel()]
            m.submodules.gather = gather = Memory(shape=unsigned(abits + 1), depth=len(table),
                                                  init=table)
            grd = gather.read_port()
            m.d.comb += [grd.addr.eq(gidx), rd.addr.eq(base + grd.data[:abits])]
            m.d.sync += pad2.eq(grd.data[abits])

        x = Signal(acc_shape if s.kind != "mac" else _x_shape(s))
        lo = s.x_range()[0]
        m.d.comb += x.eq(Mux(pad2, lo if s.kind == "max" else 0, _decoded(s.decode, rd.data)))

        accs = [Signal(acc_shape, name=f"acc{l}") for l in range(P)]
        if s.kind == "mac":
            self._mac(m, s, accs, x, widx, g, v2, first2)
        else:
            x3, v3, first3 = Signal.like(x), Signal(), Signal()
            m.d.sync += [x3.eq(x), v3.eq(v2), first3.eq(first2)]
            reduced = {"max": Mux(first3 | (x3 > accs[0]), x3, accs[0]),
                       "sum": Mux(first3, 0, accs[0]) + x3, "copy": x3}[s.kind]
            with m.If(v3):
                m.d.sync += accs[0].eq(reduced)

        # the output: accs[0] through the epilogue, directly or through its register stages
        # (a stalling pipeline: every stage advances when its last stage is empty or taken)
        draining, take = Signal(), Signal()
        latency = s.epilogue_latency()
        if latency:
            advance, staged = Signal(), Signal(latency)
            m.d.comb += [advance.eq(~staged[-1] | self.o.ready), take.eq(draining & advance),
                         self.o.valid.eq(staged[-1])]
            with m.If(advance):
                m.d.sync += staged.eq(Cat(draining, staged[:-1]))
            m.d.comb += self.o.payload.eq(_apply_epilogue(m, s, accs[0], advance))
        else:
            m.d.comb += [take.eq(draining & self.o.ready), self.o.valid.eq(draining),
                         self.o.payload.eq(_apply_epilogue(m, s, accs[0]))]

        # loader: one input per cycle into the free bank
        m.d.comb += [wr.addr.eq(Mux(wbank, size, 0) + count), wr.data.eq(self.i.payload),
                     self.i.ready.eq(~(full >> wbank)[0]), wr.en.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += count.eq(count + 1)
            with m.If(count == size - 1):
                m.d.comb += loaded.eq(1)
                m.d.sync += [count.eq(0), wbank.eq(~wbank)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If((full >> rbank)[0]):
                    m.d.sync += [k.eq(0), g.eq(0), p.eq(0), gidx.eq(0), widx.eq(0)]
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
                m.d.comb += draining.eq(1)
                with m.If(take):
                    m.d.sync += [a.eq(b) for a, b in zip(accs, accs[1:])]
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == P - 1):
                        self._next_group(m, s, g, p, gidx, widx, computed, rbank)
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

    def _next_group(self, m, s, g, p, gidx, widx, computed, rbank):
        K = s.reduction
        last_group = g == s.groups - 1
        with m.If(~last_group):
            m.d.sync += [g.eq(g + 1), gidx.eq(gidx - K)]  # same position, next channels
            m.next = "ISSUE"
        with m.Elif(p == s.positions - 1):
            m.d.comb += computed.eq(1)
            m.d.sync += rbank.eq(~rbank)
            m.next = "IDLE"
        with m.Else():
            m.d.sync += [g.eq(0), p.eq(p + 1), widx.eq(0)]
            m.next = "ISSUE"


def _x_shape(spec):
    lo, hi = spec.x_range()
    return int_shape(holding_format(lo, hi))


class AddEngine(wiring.Component):
    """Elementwise sum of two streams in the same order (a residual add): `i` from the previous
    engine, `skip` from an earlier one; one registered output per cycle when both inputs are valid."""

    def __init__(self, spec: EngineSpec):
        spec.validate()
        if spec.kind != "add":
            raise SpecError(f"engine {spec.name}: AddEngine maps add engines, not {spec.kind}")
        self.spec = spec
        super().__init__({"i": In(stream.Signature(spec.in_shape)),
                          "skip": In(stream.Signature(spec.skip_shape)),
                          "o": Out(stream.Signature(spec.out_shape))})

    def elaborate(self, platform):
        s = self.spec
        m = Module()
        x = Signal(s.acc_shape())
        a, b = s.align
        m.d.comb += x.eq((_decoded(s.decode, self.i.payload) << a)
                         + (_decoded(s.skip_decode, self.skip.payload) << b))
        result = _apply_epilogue(m, s, x)
        take = self.i.valid & self.skip.valid & (~self.o.valid | self.o.ready)
        m.d.comb += [self.i.ready.eq(take), self.skip.ready.eq(take)]
        with m.If(take):
            m.d.sync += [self.o.payload.eq(result), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class StreamFork(wiring.Component):
    """One stream to two consumers: a transfer happens when both are ready (no buffering)."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "a": Out(stream.Signature(shape)),
                          "b": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.a.payload.eq(self.i.payload), self.b.payload.eq(self.i.payload),
                     self.a.valid.eq(self.i.valid & self.b.ready),
                     self.b.valid.eq(self.i.valid & self.a.ready),
                     self.i.ready.eq(self.a.ready & self.b.ready)]
        return m


class StreamNetwork(wiring.Component):
    """The engines chained by valid/ready streams: input codes in, output codes out, in order.

    Engine n reads the output of engine `spec.source` (-1: the network input); an add engine
    also reads the stream of engine `spec.skip` through a FIFO. A stream read twice is forked.
    """

    def __init__(self, specs):
        if not specs:
            raise SpecError("the network has no compute layer to map onto engines")
        self.specs = list(specs)
        for n, spec in enumerate(self.specs):
            for src in (spec.source, spec.skip):
                if src is not None and not -1 <= src < n:
                    raise SpecError(f"engine {spec.name}: source {src} must be an earlier engine "
                                    "or -1 (the network input)")
        super().__init__({"i": In(stream.Signature(specs[0].in_shape)),
                          "o": Out(stream.Signature(specs[-1].out_shape))})

    def elaborate(self, platform):
        from amaranth.lib.fifo import SyncFIFOBuffered
        m = Module()
        engines = [AddEngine(spec) if spec.kind == "add" else LayerEngine(spec)
                   for spec in self.specs]
        for index, engine in enumerate(engines):
            m.submodules[f"engine{index}"] = engine
        # consumers of every stream, in order: (engine, port name)
        readers = {}
        for n, spec in enumerate(self.specs):
            readers.setdefault(spec.source, []).append((n, "i"))
            if spec.skip is not None:
                readers.setdefault(spec.skip, []).append((n, "skip"))
        readers.setdefault(len(engines) - 1, []).append((None, "o"))
        for src, users in sorted(readers.items()):
            stream_out = wiring.flipped(self.i) if src == -1 else engines[src].o
            if len(users) > 2:
                raise SpecError(f"stream of engine {src} feeds {len(users)} readers; the native "
                                "backend forks a stream at most once")
            ports = []
            if len(users) == 2:
                m.submodules[f"fork{src + 1}"] = fork = StreamFork(stream_out.payload.shape())
                wiring.connect(m, stream_out, fork.i)
                ports = [fork.a, fork.b]
            else:
                ports = [stream_out]
            for port, (n, name) in zip(ports, users):
                if n is None:
                    wiring.connect(m, port, wiring.flipped(self.o))
                elif name == "i":
                    wiring.connect(m, port, engines[n].i)
                else:
                    spec = self.specs[n]
                    m.submodules[f"skip{n}"] = fifo = SyncFIFOBuffered(
                        width=spec.skip_shape.width, depth=spec.skip_depth)
                    m.d.comb += [fifo.w_data.eq(port.payload), fifo.w_en.eq(port.valid),
                                 port.ready.eq(fifo.w_rdy),
                                 engines[n].skip.payload.eq(fifo.r_data),
                                 engines[n].skip.valid.eq(fifo.r_rdy),
                                 fifo.r_en.eq(engines[n].skip.ready)]
        return m
