"""Systolic arrays of MACs, rows x cols, weight-stationary (ws) or output-stationary (os).

Operands stream in and results stream out over valid/ready; narrow products share a multiplier.

PE arithmetic: integer formats multiply through hard multipliers (with packing factor n, see
`forma.hdl.packing`, one PE serves n adjacent columns from one multiplier, so a row has G =
cols / n PEs) and sum in a wrapping accumulator format. Minifloat and posit formats (any mix)
are decoded once at the array's edge; each PE forms the exact product as a fixed-point word and
sums exactly (`forma.hdl.exact_product`, G = cols), and with `out` each column's result is
rounded once to that format: the contract of `formats.dot(..., accumulate="exact")`.

Both dataflows run in lock-step: the whole array advances on a cycle when the output register is
empty or being read (`advance`), so a stalled output holds every register and a bubble (no input)
travels through as an invalid slot. Activations move one processing element (PE) to the right per
cycle; row r enters r cycles late (skew) so that every column sees a consistent wavefront. A
product takes P cycles from the PE's operand registers: P = 3 for integer PEs, one register
before the multiplier and two after it (`forma.hdl.hard_multiplier`; on ECP5 the first two are
the MULT18X18D's own input and output registers, so no path crosses the multiplier's routing
twice), and P = 4 for exact PEs, whose significand product is then shifted into place.

Vector payloads (a row of activations, weights or results) hold element i in bits
[i*width, (i+1)*width): raw integers of their format, codes, or column words (exact arrays: the
exact sum, two's complement, with its nan/inf/-0 flags above it; 0 is the empty sum).

Weight-stationary (`dataflow="ws"`): y[c] = psum[c] + sum_r x[r] * W[r][c] for every input
vector x (length rows), with W the active rows x cols weight tile. Ports:
- `wl`: one weight row (cols values) per beat, rows 0..rows-1 in order, into a shadow tile;
- `i`: `a` (x), `psum` (cols partial sums to add: the previous tile's results, or zeros) and
  `swap` (this vector is the first to use the shadow tile). `i.ready` stays low for a `swap`
  beat until the shadow tile holds all rows, so the weights cannot race the activations. Data
  registers take no reset (`forma.hdl.pipeline`), so after a reset the first vector swaps;
- `o`: y (cols values in the accumulator format, which wraps like the integer MAC's); with
  `out`, a struct of `acc` (the column words, for the next pass's psum) and `y` (the words
  rounded to out).
Schedule: fill = rows + G + P cycles (+ R = 3 with `out`) from a vector's acceptance to its y;
steady state = one vector (rows x cols MACs) per cycle; drain = the last y leaves fill cycles
after its vector. A swap reaches PE (r, g) r + g cycles after acceptance, so the shadow tile
accepts the next tile's rows from rows + G - 1 cycles after a swap: loading overlaps computing
whenever a tile is used for at least 2 * rows + G vectors, and reloading mid-stream costs no cycle.

Output-stationary (`dataflow="os"`): PE (i, j) sums a[i] * w[j] over the beats of a tile; the
beat with `last` set ends the tile. Ports:
- `i`: `a` (rows values: column k of the activation tile), `w` (cols values: row k of the
  weight tile) and `last`;
- `o`: the rows x cols results (with `out`: rounded codes), one row (cols values) per beat,
  rows 0..rows-1 in order.
Schedule: fill = rows + G + P + 1 cycles (+ R = 3 with `out`) from the `last` beat to result
row 0; steady state = one beat (rows x cols MACs) per cycle while tiles are at least `rows` beats
long (each tile's results drain over rows cycles while the next tile accumulates); `i.ready`
stays low for a `last` beat that comes fewer than rows beats after the previous one; drain =
rows more cycles.
"""
from amaranth import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from .exact_product import ExactArithmetic
from .hard_multiplier import LATENCY, registered_product
from .mac import IntegerMAC, int_shape
from .packing import MULTIPLIER_BITS, choose_packing, pack_weights, split_products
from .pipeline import data_register, delay

DATAFLOWS = ("ws", "os")
MAX_SIDE = 64


def _vector(shape, count):
    """A port field of `count` elements: element i in bits [i*width, (i+1)*width), as an
    ArrayLayout packs them (plain bits, since wires named `x` and `x[0]` trip Yosys' ABC9)."""
    return unsigned(Shape.cast(shape).width * count)


def _elements(value, shape, count):
    """The `count` elements of a `_vector` field as values of `shape`."""
    shape = Shape.cast(shape)
    parts = [value[i * shape.width:(i + 1) * shape.width] for i in range(count)]
    return [part.as_signed() if shape.signed else part for part in parts]


def accept_tiles(m, advance, i, rows):
    """Drive i.ready: a beat with `last` (the first of a new output tile) waits until `rows`
    beats have passed since the previous `last`, so a tile's results have left the cells it
    reuses. Returns the accept strobe (i.valid & i.ready)."""
    # Cycles since the last `last` minus one, saturating at rows - 1: every value reachable.
    since_last = Signal(range(rows), init=rows - 1)
    m.d.comb += i.ready.eq(advance & (~i.payload.last | (since_last == rows - 1)))
    take = i.valid & i.ready
    with m.If(advance):
        with m.If(take & i.payload.last):
            m.d.sync += since_last.eq(0)
        with m.Elif(since_last != rows - 1):
            m.d.sync += since_last.eq(since_last + 1)
    return take


class IntegerLanes:
    """Integer PE arithmetic: packed products through hard multipliers, wrapping sums."""

    family = "int"
    latency = LATENCY

    def __init__(self, a, w, acc, *, length, packing, cols, multiplier_bits):
        # The PE checks the formats, the accumulator against the product and `length`.
        pe = IntegerMAC(a, w, acc, length=length)
        pe._MustUse__silence = True  # built for its checks only, never elaborated
        self.a_format, self.w_format, self.acc_format = pe.a_format, pe.w_format, pe.acc_format
        self.out_format = None
        self.plan = choose_packing(self.a_format, self.w_format, packing, cols, multiplier_bits)
        self.factor = self.plan.factor
        self.a_shape, self.w_shape = int_shape(self.a_format), int_shape(self.w_format)
        self.word_shape = int_shape(self.acc_format)
        self.weight_shape = self.plan.packed_shape

    def edge_a(self, m, value, name):
        return value

    def edge_w(self, m, values, name):
        return pack_weights(self.plan, values)

    def products(self, m, advance, a, weight, name, platform):
        product = registered_product(m, advance, a, weight, name, platform,
                                     self.plan.packed_product_shape)
        return split_products(self.plan, product)

    def add(self, x, y):
        return x + y


class ExactLanes:
    """Minifloat/posit PE arithmetic: operands decoded at the array's edge, exact fixed-point
    products and sums (`forma.hdl.exact_product`), one rounding per column to `out`."""

    family = "exact"
    factor = 1
    latency = ExactArithmetic.latency

    def __init__(self, a, w, acc, out, *, length):
        self.arith = ExactArithmetic(a, w, out, acc, length=length)
        self.a_format, self.w_format = self.arith.a_format, self.arith.w_format
        self.out_format, self.acc_format = self.arith.out_format, None
        self.a_shape, self.w_shape = unsigned(self.a_format.bits), unsigned(self.w_format.bits)
        self.word_shape = unsigned(self.arith.word_bits)
        self.weight_shape = unsigned(self.arith.operand_bits("w"))

    def edge_a(self, m, value, name):
        return self.arith.decode(m, "a", value, name)

    def edge_w(self, m, values, name):
        return self.arith.decode(m, "w", values[0], name)

    def products(self, m, advance, a, weight, name, platform):
        return [self.arith.product(m, advance, a, weight, name, platform)]

    def add(self, x, y):
        return self.arith.add(x, y)


def _format_family(fmt, role):
    """The family of an operand format: "int" also for names only the integer checks can explain."""
    if isinstance(fmt, str):
        try:
            fmt = parse_format(fmt)
        except SpecError:
            return "int"
    if fmt.family not in ("int", "float", "posit"):
        raise SpecError(f"{role}={fmt.name}: array PEs take integer, minifloat or posit formats, "
                        f"not {fmt.family}")
    return fmt.family


class SystolicArray(wiring.Component):
    """rows x cols MACs; see the module docstring for the ports and the schedule.

    a, w: integer formats, or minifloat/posit formats (exact arrays), or their names.
    Integer: acc is the accumulator format, exact for `length` products when omitted (for ws,
    `length` counts psum passes times rows); packing: "auto", "off" or a factor;
    multiplier_bits: operand width of the hard multiplier packing targets.
    Exact: acc (intN) widens the exact accumulator; out: the format results are rounded to
    once per column (omitted: results leave as exact column words).
    """

    def __init__(self, a, w, acc=None, *, rows, cols, length=1024, dataflow="ws",
                 packing="auto", out=None, multiplier_bits=MULTIPLIER_BITS):
        for name, size in (("rows", rows), ("cols", cols)):
            if not (isinstance(size, int) and 1 <= size <= MAX_SIDE):
                raise SpecError(f"{name}={size}: the array side must be an integer 1..{MAX_SIDE}")
        if dataflow not in DATAFLOWS:
            raise SpecError(f"dataflow={dataflow}: use ws (weight-stationary) or os "
                            f"(output-stationary)")
        if not (isinstance(length, int) and length >= 1):
            raise SpecError(f"length={length}: the reduction length must be an integer >= 1")
        exact = {_format_family(a, "a"), _format_family(w, "w")} & {"float", "posit"}
        if exact:
            if packing not in ("auto", "off", 1, "1"):
                raise SpecError(f"packing={packing}: minifloat/posit arrays use one multiplier "
                                f"per PE; use packing=auto or off")
            self.lanes = ExactLanes(a, w, acc, out, length=length)
        else:
            if out is not None:
                raise SpecError(f"out={out}: integer arrays stream their accumulators; out= "
                                f"rounds minifloat/posit arrays only")
            self.lanes = IntegerLanes(a, w, acc, length=length, packing=packing, cols=cols,
                                      multiplier_bits=multiplier_bits)
        if dataflow == "ws" and length < rows:
            raise SpecError(f"length={length}: one ws pass sums rows={rows} products; "
                            f"give length >= {rows}")
        lanes = self.lanes
        self.family = lanes.family
        self.a_format, self.w_format = lanes.a_format, lanes.w_format
        self.acc_format, self.out_format = lanes.acc_format, lanes.out_format
        self.plan = getattr(lanes, "plan", None)
        self.factor = lanes.factor
        self.rows, self.cols, self.length, self.dataflow = rows, cols, length, dataflow
        self.groups = cols // self.factor
        self.multipliers = rows * self.groups
        self.rounding_stage = 0 if self.out_format is None else lanes.arith.round_latency
        self.product_latency = lanes.latency
        self.latency = (rows + self.groups + lanes.latency + (0 if dataflow == "ws" else 1)
                        + self.rounding_stage)
        a_row = _vector(lanes.a_shape, rows)
        w_row = _vector(lanes.w_shape, cols)
        word_row = _vector(lanes.word_shape, cols)
        if self.out_format is None:
            o_payload = word_row
        else:
            code_row = _vector(self.out_format.bits, cols)
            o_payload = (data.StructLayout({"acc": word_row, "y": code_row})
                         if dataflow == "ws" else code_row)
        if dataflow == "ws":
            ports = {"wl": In(stream.Signature(w_row)),
                     "i": In(stream.Signature(data.StructLayout(
                         {"a": a_row, "psum": word_row, "swap": 1})))}
        else:
            ports = {"i": In(stream.Signature(data.StructLayout(
                {"a": a_row, "w": w_row, "last": 1})))}
        super().__init__({**ports, "o": Out(stream.Signature(o_payload))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        if self.dataflow == "ws":
            self._weight_stationary(m, advance, platform)
        else:
            self._output_stationary(m, advance, platform)
        return m

    def _group(self, g):
        n = self.factor
        return range(g * n, (g + 1) * n)

    def _deskew(self, m, advance, values, g, name):
        """Delay group g's values so that every group leaves on the same cycle."""
        return [delay(m, advance, v, self.groups - 1 - g, f"{name}_{c}", data=True)
                for c, v in zip(self._group(g), values)]

    def _emit(self, m, advance, y, valid):
        """Drive `o` from the column words y and their valid (both registered): as they are, or
        rounded to out_format R = 3 cycles later (ws: with the words, for the next pass's psum)."""
        o = self.o
        if self.out_format is None:
            m.d.comb += [o.payload.eq(Cat(y)), o.valid.eq(valid)]
            return
        stages = self.rounding_stage
        codes = Cat(self.lanes.arith.round(m, advance, word, f"round_{c}")
                    for c, word in enumerate(y))
        if self.dataflow == "ws":
            m.d.comb += [o.payload.acc.eq(delay(m, advance, Cat(y), stages, "y_acc", data=True)),
                         o.payload.y.eq(codes)]
        else:
            m.d.comb += o.payload.eq(codes)
        m.d.comb += o.valid.eq(delay(m, advance, valid, stages, "y_valid", data=False))

    def _weight_stationary(self, m, advance, platform):
        rows, groups, lanes = self.rows, self.groups, self.lanes
        word_shape = lanes.word_shape
        i, wl = self.i, self.wl
        a_in = _elements(i.payload.a, lanes.a_shape, rows)
        psum_in = _elements(i.payload.psum, word_shape, self.cols)
        w_in = _elements(wl.payload, lanes.w_shape, self.cols)
        y = [None] * self.cols

        # Shadow tile: rows enter at the bottom and shift up, packed once on the way in.
        loaded = Signal(range(rows + 1))
        busy = Signal(range(rows + groups))  # cycles until the last PE has taken its weights
        full = loaded == rows
        shadow = [[data_register(lanes.weight_shape, f"shadow_{r}_{g}") for g in range(groups)]
                  for r in range(rows)]
        m.d.comb += [wl.ready.eq((busy == 0) & ~full),
                     i.ready.eq(advance & (~i.payload.swap | full))]
        take = i.valid & i.ready
        packed_in = [lanes.edge_w(m, [w_in[c] for c in self._group(g)], f"decode_w_{g}")
                     for g in range(groups)]
        with m.If(wl.valid & wl.ready):
            m.d.sync += loaded.eq(loaded + 1)
            for g in range(groups):
                m.d.sync += [shadow[r][g].eq(shadow[r + 1][g]) for r in range(rows - 1)]
                m.d.sync += shadow[rows - 1][g].eq(packed_in[g])
        with m.If(take & i.payload.swap):
            m.d.sync += [loaded.eq(0), busy.eq(rows + groups - 2)]
        with m.Elif(advance & (busy != 0)):
            m.d.sync += busy.eq(busy - 1)

        psums = [[None] * self.cols for _ in range(rows + 1)]
        for g in range(groups):
            for c in self._group(g):
                psums[0][c] = delay(m, advance, psum_in[c], g + 1 + lanes.latency,
                                    f"psum_in_{c}", data=True)
        for r in range(rows):
            a = lanes.edge_a(m, delay(m, advance, a_in[r], r, f"a_in_{r}", data=True),
                             f"decode_a_{r}")
            swap = delay(m, advance, take & i.payload.swap, r, f"swap_in_{r}", data=False)
            for g in range(groups):
                a_reg = data_register(a.shape(), f"a_{r}_{g}")
                swap_reg = Signal(name=f"swap_{r}_{g}")
                weight = data_register(lanes.weight_shape, f"weight_{r}_{g}")
                with m.If(advance):
                    m.d.sync += [a_reg.eq(a), swap_reg.eq(swap)]
                    with m.If(swap):  # the weights change with the first vector that uses them
                        m.d.sync += weight.eq(shadow[r][g])
                parts = lanes.products(m, advance, a_reg, weight, f"product_{r}_{g}", platform)
                for c, part in zip(self._group(g), parts):
                    psum = data_register(word_shape, f"psum_{r}_{c}")
                    with m.If(advance):
                        m.d.sync += psum.eq(lanes.add(psums[r][c], part))
                    psums[r + 1][c] = psum
                a, swap = a_reg, swap_reg

        for g in range(groups):
            outputs = self._deskew(m, advance, [psums[rows][c] for c in self._group(g)], g, "y")
            for c, value in zip(self._group(g), outputs):
                y[c] = value
        valid = delay(m, advance, take, self.latency - self.rounding_stage, "valid", data=False)
        self._emit(m, advance, y, valid)

    def _output_stationary(self, m, advance, platform):
        rows, groups, lanes = self.rows, self.groups, self.lanes
        word_shape = lanes.word_shape
        i = self.i
        a_in = _elements(i.payload.a, lanes.a_shape, rows)
        w_in = _elements(i.payload.w, lanes.w_shape, self.cols)
        y = [None] * self.cols

        take = accept_tiles(m, advance, i, rows)

        weights = [lanes.edge_w(m, [delay(m, advance, w_in[c], g, f"w_in_{c}", data=True)
                                    for c in self._group(g)], f"decode_w_{g}")
                   for g in range(groups)]
        done = [[None] * self.cols for _ in range(rows)]
        drain_load = [None] * groups
        for r in range(rows):
            a = lanes.edge_a(m, delay(m, advance, a_in[r], r, f"a_in_{r}", data=True),
                             f"decode_a_{r}")
            valid = delay(m, advance, take, r, f"valid_in_{r}", data=False)
            last = delay(m, advance, i.payload.last, r, f"last_in_{r}", data=True)
            for g in range(groups):
                a_reg = data_register(a.shape(), f"a_{r}_{g}")
                w_reg = data_register(lanes.weight_shape, f"w_{r}_{g}")
                valid_reg = Signal(name=f"valid_{r}_{g}")
                last_reg = data_register(1, f"last_{r}_{g}")  # read only with its valid
                parts = lanes.products(m, advance, a_reg, w_reg, f"product_{r}_{g}", platform)
                restart = Signal(init=1, name=f"restart_{r}_{g}")
                with m.If(advance):
                    m.d.sync += [a_reg.eq(a), valid_reg.eq(valid), last_reg.eq(last),
                                 w_reg.eq(weights[g])]
                product_valid = delay(m, advance, valid_reg, lanes.latency,
                                      f"product_valid_{r}_{g}", data=False)
                product_last = delay(m, advance, last_reg, lanes.latency,
                                     f"product_last_{r}_{g}", data=True)
                for c, part in zip(self._group(g), parts):
                    acc = data_register(word_shape, f"acc_{r}_{c}")
                    done[r][c] = data_register(word_shape, f"done_{r}_{c}")
                    total = lanes.add(Mux(restart, 0, acc), part)
                    with m.If(advance & product_valid):
                        m.d.sync += acc.eq(total)
                        # The bottom row's result is drained on the next advance: no hold.
                        with m.If(product_last | (r == rows - 1)):
                            m.d.sync += done[r][c].eq(total)
                with m.If(advance & product_valid):
                    m.d.sync += restart.eq(product_last)
                if r == rows - 1:
                    drain_load[g] = Signal(name=f"drain_load_{g}")
                    with m.If(advance):
                        m.d.sync += drain_load[g].eq(product_valid & product_last)
                a, valid, last, weights[g] = a_reg, valid_reg, last_reg, w_reg

        # Each group's results shift out row by row once its bottom row has finished.
        for g in range(groups):
            drain = [[data_register(word_shape, f"drain_{r}_{c}") for c in self._group(g)]
                     for r in range(rows)]
            drain_valid = [Signal(name=f"drain_valid_{r}_{g}") for r in range(rows)]
            with m.If(advance):
                with m.If(drain_load[g]):
                    for r in range(rows):
                        m.d.sync += drain_valid[r].eq(1)
                        m.d.sync += [d.eq(done[r][c]) for d, c in zip(drain[r], self._group(g))]
                with m.Else():
                    for r in range(rows - 1):
                        m.d.sync += drain_valid[r].eq(drain_valid[r + 1])
                        m.d.sync += [d.eq(s) for d, s in zip(drain[r], drain[r + 1])]
                    m.d.sync += drain_valid[rows - 1].eq(0)
                    # The bottom drain row is free once shifted up: no hold.
                    m.d.sync += [d.eq(done[rows - 1][c])
                                 for d, c in zip(drain[rows - 1], self._group(g))]
            outputs = self._deskew(m, advance, drain[0], g, "y")
            for c, value in zip(self._group(g), outputs):
                y[c] = value
            if g == groups - 1:
                out_valid = drain_valid[0]
        self._emit(m, advance, y, out_valid)
