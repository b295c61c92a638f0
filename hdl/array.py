"""Systolic arrays of integer MACs, rows x cols, weight-stationary (ws) or output-stationary (os).

Operands stream in and results stream out over valid/ready; narrow products share a multiplier.

Both dataflows run in lock-step: the whole array advances on a cycle when the output register is
empty or being read (`advance`), so a stalled output holds every register and a bubble (no input)
travels through as an invalid slot. Activations move one processing element (PE) to the right per
cycle; row r enters r cycles late (skew) so that every column sees a consistent wavefront. With
packing factor n (see `forma.hdl.packing`) one PE serves n adjacent columns from one multiplier,
so a row has G = cols / n PEs and the array rows x G multipliers.

Vector payloads (a row of activations, weights or results) hold element i in bits
[i*width, (i+1)*width), raw integers of their format.

Weight-stationary (`dataflow="ws"`): y[c] = psum[c] + sum_r x[r] * W[r][c] for every input
vector x (length rows), with W the active rows x cols weight tile. Ports:
- `wl`: one weight row (cols values) per beat, rows 0..rows-1 in order, into a shadow tile;
- `i`: `a` (x), `psum` (cols partial sums to add: the previous tile's results, or zeros) and
  `swap` (this vector is the first to use the shadow tile). `i.ready` stays low for a `swap`
  beat until the shadow tile holds all rows, so the weights cannot race the activations;
- `o`: y (cols values in the accumulator format, which wraps like the integer MAC's).
Schedule: fill = rows + G + 2 cycles from a vector's acceptance to its y; steady state = one
vector (rows x cols MACs) per cycle; drain = the last y leaves fill cycles after its vector.
A swap reaches PE (r, g) r + g cycles after acceptance, so the shadow tile accepts the next
tile's rows from rows + G - 1 cycles after a swap: loading overlaps computing whenever a tile is
used for at least 2 * rows + G vectors, and reloading mid-stream costs no cycle.

Output-stationary (`dataflow="os"`): PE (i, j) sums a[i] * w[j] over the beats of a tile; the
beat with `last` set ends the tile. Ports:
- `i`: `a` (rows values: column k of the activation tile), `w` (cols values: row k of the
  weight tile) and `last`;
- `o`: the rows x cols results, one row (cols values) per beat, rows 0..rows-1 in order.
Schedule: fill = rows + G + 3 cycles from the `last` beat to result row 0; steady state = one
beat (rows x cols MACs) per cycle while tiles are at least `rows` beats long (each tile's
results drain over rows cycles while the next tile accumulates); `i.ready` stays low for a
`last` beat that comes fewer than rows beats after the previous one; drain = rows more cycles.
"""
from amaranth import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from .mac import IntegerMAC, int_shape
from .packing import MULTIPLIER_BITS, choose_packing, pack_weights, split_products

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


def _delay(m, advance, value, cycles, name):
    """`value` through `cycles` registers that move when `advance` is high."""
    for index in range(cycles):
        register = Signal.like(value, name=f"{name}_d{index}")
        with m.If(advance):
            m.d.sync += register.eq(value)
        value = register
    return value


def _multiply(m, advance, a, w, name):
    """Registered a * w, two cycles after its operands: the operands are registered once more
    before the hard multiplier, so its input routing gets a cycle of its own."""
    a_near, w_near = Signal.like(a, name=f"{name}_a"), Signal.like(w, name=f"{name}_w")
    product = Signal((a * w).shape(), name=name)
    with m.If(advance):
        m.d.sync += [a_near.eq(a), w_near.eq(w), product.eq(a_near * w_near)]
    return product


class SystolicArray(wiring.Component):
    """rows x cols integer MACs; see the module docstring for the ports and the schedule.

    a, w: integer formats (or their names); acc: the accumulator format, exact for `length`
    products when omitted (for ws, `length` counts psum passes times rows). packing: "auto",
    "off" or a factor; multiplier_bits: operand width of the hard multiplier packing targets.
    """

    def __init__(self, a, w, acc=None, *, rows, cols, length=1024, dataflow="ws",
                 packing="auto", multiplier_bits=MULTIPLIER_BITS):
        for name, size in (("rows", rows), ("cols", cols)):
            if not (isinstance(size, int) and 1 <= size <= MAX_SIDE):
                raise SpecError(f"{name}={size}: the array side must be an integer 1..{MAX_SIDE}")
        if dataflow not in DATAFLOWS:
            raise SpecError(f"dataflow={dataflow}: use ws (weight-stationary) or os "
                            f"(output-stationary)")
        # The PE checks the formats, the accumulator against the product and `length`.
        pe = IntegerMAC(a, w, acc, length=length)
        pe._MustUse__silence = True  # built for its checks only, never elaborated
        if dataflow == "ws" and length < rows:
            raise SpecError(f"length={length}: one ws pass sums rows={rows} products; "
                            f"give length >= {rows}")
        self.a_format, self.w_format, self.acc_format = pe.a_format, pe.w_format, pe.acc_format
        self.rows, self.cols, self.length, self.dataflow = rows, cols, length, dataflow
        self.plan = choose_packing(self.a_format, self.w_format, packing, cols, multiplier_bits)
        self.groups = cols // self.plan.factor
        self.multipliers = rows * self.groups
        self.latency = rows + self.groups + (2 if dataflow == "ws" else 3)
        a_row = _vector(int_shape(self.a_format), rows)
        w_row = _vector(int_shape(self.w_format), cols)
        acc_row = _vector(int_shape(self.acc_format), cols)
        if dataflow == "ws":
            ports = {"wl": In(stream.Signature(w_row)),
                     "i": In(stream.Signature(data.StructLayout(
                         {"a": a_row, "psum": acc_row, "swap": 1})))}
        else:
            ports = {"i": In(stream.Signature(data.StructLayout(
                {"a": a_row, "w": w_row, "last": 1})))}
        super().__init__({**ports, "o": Out(stream.Signature(acc_row))})

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        if self.dataflow == "ws":
            self._weight_stationary(m, advance)
        else:
            self._output_stationary(m, advance)
        return m

    def _group(self, g):
        n = self.plan.factor
        return range(g * n, (g + 1) * n)

    def _deskew(self, m, advance, values, g, name):
        """Delay group g's values so that every group leaves on the same cycle."""
        return [_delay(m, advance, v, self.groups - 1 - g, f"{name}_{c}")
                for c, v in zip(self._group(g), values)]

    def _weight_stationary(self, m, advance):
        rows, groups, plan = self.rows, self.groups, self.plan
        acc_shape = int_shape(self.acc_format)
        i, wl, o = self.i, self.wl, self.o
        a_in = _elements(i.payload.a, int_shape(self.a_format), rows)
        psum_in = _elements(i.payload.psum, acc_shape, self.cols)
        w_in = _elements(wl.payload, int_shape(self.w_format), self.cols)
        y = [None] * self.cols

        # Shadow tile: rows enter at the bottom and shift up, packed once on the way in.
        loaded = Signal(range(rows + 1))
        busy = Signal(range(rows + groups))  # cycles until the last PE has taken its weights
        full = loaded == rows
        shadow = [[Signal(plan.packed_shape, name=f"shadow_{r}_{g}") for g in range(groups)]
                  for r in range(rows)]
        m.d.comb += [wl.ready.eq((busy == 0) & ~full),
                     i.ready.eq(advance & (~i.payload.swap | full))]
        take = i.valid & i.ready
        with m.If(wl.valid & wl.ready):
            m.d.sync += loaded.eq(loaded + 1)
            for g in range(groups):
                packed = pack_weights(plan, [w_in[c] for c in self._group(g)])
                m.d.sync += [shadow[r][g].eq(shadow[r + 1][g]) for r in range(rows - 1)]
                m.d.sync += shadow[rows - 1][g].eq(packed)
        with m.If(take & i.payload.swap):
            m.d.sync += [loaded.eq(0), busy.eq(rows + groups - 2)]
        with m.Elif(advance & (busy != 0)):
            m.d.sync += busy.eq(busy - 1)

        psums = [[None] * self.cols for _ in range(rows + 1)]
        for g in range(groups):
            for c in self._group(g):
                psums[0][c] = _delay(m, advance, psum_in[c], g + 3, f"psum_in_{c}")
        for r in range(rows):
            a = _delay(m, advance, a_in[r], r, f"a_in_{r}")
            swap = _delay(m, advance, take & i.payload.swap, r, f"swap_in_{r}")
            for g in range(groups):
                a_reg = Signal.like(a, name=f"a_{r}_{g}")
                swap_reg = Signal(name=f"swap_{r}_{g}")
                weight = Signal(plan.packed_shape, name=f"weight_{r}_{g}")
                with m.If(advance):
                    m.d.sync += [a_reg.eq(a), swap_reg.eq(swap)]
                    with m.If(swap):  # the weights change with the first vector that uses them
                        m.d.sync += weight.eq(shadow[r][g])
                product = _multiply(m, advance, a_reg, weight, f"product_{r}_{g}")
                for c, part in zip(self._group(g), split_products(plan, product)):
                    psum = Signal(acc_shape, name=f"psum_{r}_{c}")
                    with m.If(advance):
                        m.d.sync += psum.eq(psums[r][c] + part)
                    psums[r + 1][c] = psum
                a, swap = a_reg, swap_reg

        for g in range(groups):
            outputs = self._deskew(m, advance, [psums[rows][c] for c in self._group(g)], g, "y")
            for c, value in zip(self._group(g), outputs):
                y[c] = value
        m.d.comb += [o.payload.eq(Cat(y)),
                     o.valid.eq(_delay(m, advance, take, self.latency, "valid"))]

    def _output_stationary(self, m, advance):
        rows, groups, plan = self.rows, self.groups, self.plan
        acc_shape = int_shape(self.acc_format)
        i, o = self.i, self.o
        a_in = _elements(i.payload.a, int_shape(self.a_format), rows)
        w_in = _elements(i.payload.w, int_shape(self.w_format), self.cols)
        y = [None] * self.cols

        since_last = Signal(range(rows + 1), init=rows)  # beats since the last `last`, saturating
        m.d.comb += i.ready.eq(advance & (~i.payload.last | (since_last == rows)))
        take = i.valid & i.ready
        with m.If(advance):
            with m.If(take & i.payload.last):
                m.d.sync += since_last.eq(1)
            with m.Elif(since_last != rows):
                m.d.sync += since_last.eq(since_last + 1)

        weights = [_delay(m, advance, pack_weights(plan, [w_in[c] for c in self._group(g)]),
                          g, f"w_in_{g}") for g in range(groups)]
        done = [[None] * self.cols for _ in range(rows)]
        drain_load = [None] * groups
        for r in range(rows):
            a = _delay(m, advance, a_in[r], r, f"a_in_{r}")
            valid = _delay(m, advance, take, r, f"valid_in_{r}")
            last = _delay(m, advance, take & i.payload.last, r, f"last_in_{r}")
            for g in range(groups):
                a_reg = Signal.like(a, name=f"a_{r}_{g}")
                w_reg = Signal(plan.packed_shape, name=f"w_{r}_{g}")
                valid_reg, last_reg = Signal(name=f"valid_{r}_{g}"), Signal(name=f"last_{r}_{g}")
                product = _multiply(m, advance, a_reg, w_reg, f"product_{r}_{g}")
                restart = Signal(init=1, name=f"restart_{r}_{g}")
                with m.If(advance):
                    m.d.sync += [a_reg.eq(a), valid_reg.eq(valid), last_reg.eq(last),
                                 w_reg.eq(weights[g])]
                product_valid = _delay(m, advance, valid_reg, 2, f"product_valid_{r}_{g}")
                product_last = _delay(m, advance, last_reg, 2, f"product_last_{r}_{g}")
                for c, part in zip(self._group(g), split_products(plan, product)):
                    acc = Signal(acc_shape, name=f"acc_{r}_{c}")
                    done[r][c] = Signal(acc_shape, name=f"done_{r}_{c}")
                    total = Mux(restart, 0, acc) + part
                    with m.If(advance & product_valid):
                        m.d.sync += acc.eq(total)
                        with m.If(product_last):
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
            drain = [[Signal(acc_shape, name=f"drain_{r}_{c}") for c in self._group(g)]
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
            outputs = self._deskew(m, advance, drain[0], g, "y")
            for c, value in zip(self._group(g), outputs):
                y[c] = value
            if g == groups - 1:
                m.d.comb += o.valid.eq(drain_valid[0])
        m.d.comb += o.payload.eq(Cat(y))
