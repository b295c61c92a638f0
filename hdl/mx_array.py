"""Output-stationary systolic array of MX block dot products: C = A @ W for MX operands, each
block pair's dot rounded once to a float format `out`, the blocks summed in `out` in K order.

Contract (OCP MX v1.0 Dot/DotGeneral, `forma.sim.matmul.mx_matmul`): C[i, j] = the out-format
sum, left to right with round-to-nearest-even additions, of block_dot(A block (i, kb), W block
(kb, j)) over the K-blocks kb, each block dot exact and rounded once to out; the first block's
value starts the sum. The array takes whole blocks: a partial last block is padded with zero
elements by whoever feeds it (as MXFormat.quantize does), never with a whole zero block.

Ports (plain bit vectors; element i of a vector in bits [i*width, (i+1)*width)):
- `i`: `a` (rows blocks: block kb of output rows 0..rows-1), `w` (cols blocks: block kb of
  output columns 0..cols-1) and `last` (this beat is the tile's last block). A block is
  `block_bits` = k * element bits + 8 bits: element j in bits [j*bits, (j+1)*bits), then the
  E8M0 scale code above them.
- `o`: the rows x cols results (out codes), one row (cols codes) per beat, rows 0..rows-1.

Hardware: PE (r, c) (`MXDotCell`) takes its A block from the left and its W block from above,
passes both on registered (row r enters r cycles late, column c c cycles late, so PE (r, c)
sees beat k at cycle k + r + c), computes the block dot with `MXDotPE.block_dot` pipelined at all
of its cut points (`DOT_LATENCY` = 4 cycles including its result register), and adds it to its
accumulator with one float adder (decode, `add_unpacked`, encode: the FloatAdder's datapath) in
a one-cycle loop, so a PE accepts a block every cycle. Only the valid and `restart` registers
reset: data registers take none (`forma.hdl.pipeline`).

Schedule: lock-step; the whole array advances on a cycle when the output register is empty or
being read, so a stalled output holds every register and a cycle without input travels through as
a bubble. fill = `latency` = rows + cols + DOT_LATENCY + 1 cycles from the `last` beat to result
row 0 on `o`; steady state = one beat (rows x cols block dots, rows x cols x k MACs) per cycle
while tiles are at least `rows` beats long (a tile's results drain over rows cycles while the
next accumulates; `i.ready` stays low for a `last` beat that comes fewer than rows cycles after
the previous one); drain = rows more cycles.
"""
from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import SpecError
from ..sim.formats import parse_format
from ..sim.formats.minifloat import FloatFormat
from .array import MAX_SIDE, accept_tiles
from .float_pe import (Pipeline, add_unpacked, decoder_for, encoder_for, precision_of,
                       unit_ports, connect_value)
from .mx_pe import MXDotPE, mx_format
from .pipeline import data_register, delay

DOT_LATENCY = 1 + len(MXDotPE.CUTS)


def _out_format(out):
    fmt = parse_format(out, "out") if isinstance(out, str) else out
    if not isinstance(fmt, FloatFormat) or not fmt.has_zero:
        raise SpecError(f"out={fmt.name}: MX arrays sum their block dots in a float format with "
                        f"a zero (e.g. float32, bfloat16, float16, float8_e4m3fn)")
    if not fmt.has_nan:
        raise SpecError(f"out={fmt.name}: MX arrays need an out format with a NaN (a NaN scale "
                        f"or element makes a block dot NaN); use e.g. float16 or float8_e4m3fn")
    return fmt


def add_codes(m, fmt, x_code, y_code, name):
    """fmt code of x + y for fmt codes x, y: one round to nearest even, non-saturating (the
    FloatAdder's datapath, combinational)."""
    values = []
    for role, code in (("x", x_code), ("y", y_code)):
        unit = m.submodules[f"{name}_decode_{role}"] = decoder_for(fmt)
        port, value = unit_ports(unit)
        m.d.comb += port.eq(code)
        values.append(value)
    total = add_unpacked(m, *values, precision_of(fmt), normalize=False)
    encoder = m.submodules[f"{name}_encode"] = encoder_for(fmt, len(total.sig), len(total.exp))
    port, result = unit_ports(encoder)
    connect_value(m, port, total)
    return result


class MXDotCell(wiring.Component):
    """One PE of the MX array: registers the A and W blocks (and the beat's valid and last) on
    `advance` and passes them on; block dot (DOT_LATENCY cycles) then out-format accumulation.

    `finished` is high for the cycle whose accumulation ends a tile (its result enters `done`
    at the end of that cycle, when `advance`); `done` keeps the last finished tile's result.
    """

    def __init__(self, dot):
        self.dot = dot
        self.out_format = dot.out_format
        block = dot.block_size * dot.format.bits + dot.format.scale_format.bits
        super().__init__({
            "advance": In(1), "a": In(block), "w": In(block), "valid": In(1), "last": In(1),
            "a_out": Out(block), "w_out": Out(block), "valid_out": Out(1), "last_out": Out(1),
            "finished": Out(1), "done": Out(self.out_format.bits),
        })

    def elaborate(self, platform):
        m = Module()
        advance, dot = self.advance, self.dot
        bits = self.out_format.bits
        a = delay(m, advance, self.a, 1, "a", data=True)
        w = delay(m, advance, self.w, 1, "w", data=True)
        last_in = delay(m, advance, self.last, 1, "last_in", data=True)
        with m.If(advance):
            m.d.sync += self.valid_out.eq(self.valid)
        m.d.comb += [self.a_out.eq(a), self.w_out.eq(w), self.last_out.eq(last_in)]
        field = dot.block_size * dot.format.bits
        payload = Signal(data.Layout.cast(dot.i.payload.shape()))
        m.d.comb += [payload.a.eq(a[:field]), payload.sa.eq(a[field:]),
                     payload.b.eq(w[:field]), payload.sb.eq(w[field:])]
        pipe = Pipeline(m, advance, self.valid_out, dot.CUTS, reset_data=False)
        code = dot.block_dot(m, pipe, payload)
        block_dot = delay(m, advance, code, 1, "block_dot", data=True)
        dot_last = delay(m, advance, last_in, len(dot.CUTS) + 1, "last", data=True)
        dot_valid = Signal()
        with m.If(advance):
            m.d.sync += dot_valid.eq(pipe.valid)

        acc, done = data_register(bits, "acc"), data_register(bits, "done")
        restart = Signal(init=1)        # the next block dot starts a tile
        total = Mux(restart, block_dot, add_codes(m, self.out_format, acc, block_dot, "acc"))
        m.d.comb += [self.finished.eq(dot_valid & dot_last), self.done.eq(done)]
        with m.If(advance & dot_valid):
            m.d.sync += [acc.eq(total), restart.eq(dot_last)]
            with m.If(dot_last):
                m.d.sync += done.eq(total)
        return m


class MXSystolicArray(wiring.Component):
    """rows x cols MX block-dot PEs, output-stationary; see the module docstring.

    a, w: one E8M0-scaled MX format (or its name) for both operands (the MX dot PE's: mxfp8_e4m3,
    mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8); out: the float format every block dot is
    rounded to and the sums are kept in (default float32), one with a zero and a NaN.
    """

    family = "mx"
    dataflow = "os"

    def __init__(self, a, w=None, out="float32", *, rows, cols):
        for name, size in (("rows", rows), ("cols", cols)):
            if not (isinstance(size, int) and 1 <= size <= MAX_SIDE):
                raise SpecError(f"{name}={size}: the array side must be an integer 1..{MAX_SIDE}")
        self.a_format = mx_format(a, "a")
        self.w_format = self.a_format if w is None else mx_format(w, "w")
        if self.w_format != self.a_format:
            raise SpecError(f"w={self.w_format.name}: the MX dot PE takes one format for both "
                            f"blocks; use w={self.a_format.name}")
        self.format = self.a_format
        self.out_format = _out_format(out)
        self.rows, self.cols = rows, cols
        self.block_size = self.format.block_size
        self.block_bits = self.block_size * self.format.bits + self.format.scale_format.bits
        self.latency = rows + cols + DOT_LATENCY + 1
        self.macs_per_beat = rows * cols * self.block_size
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": unsigned(rows * self.block_bits), "w": unsigned(cols * self.block_bits),
                "last": 1}))),
            "o": Out(stream.Signature(unsigned(cols * self.out_format.bits))),
        })

    def _dot(self):
        dot = MXDotPE(self.format, self.out_format, stages=DOT_LATENCY)
        dot._MustUse__silence = True  # supplies its datapath (`block_dot`) only
        return dot

    def elaborate(self, platform):
        m = Module()
        rows, cols, width = self.rows, self.cols, self.block_bits
        i, o = self.i, self.o
        advance = ~o.valid | o.ready

        take = accept_tiles(m, advance, i, rows)

        # Operands enter skewed: row r's A blocks r cycles late, column c's W blocks c cycles late.
        w_top = [delay(m, advance, i.payload.w[c * width:(c + 1) * width], c, f"w_in_{c}",
                       data=True)
                 for c in range(cols)]
        cells = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            a = delay(m, advance, i.payload.a[r * width:(r + 1) * width], r, f"a_in_{r}",
                      data=True)
            valid = delay(m, advance, take, r, f"valid_in_{r}", data=False)
            last = delay(m, advance, take & i.payload.last, r, f"last_in_{r}", data=False)
            for c in range(cols):
                cell = cells[r][c] = m.submodules[f"pe_{r}_{c}"] = MXDotCell(self._dot())
                w = w_top[c] if r == 0 else cells[r - 1][c].w_out
                m.d.comb += [cell.advance.eq(advance), cell.a.eq(a), cell.w.eq(w),
                             cell.valid.eq(valid), cell.last.eq(last)]
                a, valid, last = cell.a_out, cell.valid_out, cell.last_out

        # Each column's results shift out row by row once its bottom PE has finished, delayed
        # so that every column leaves on the same cycle.
        codes = []
        for c in range(cols):
            drain_load = Signal(name=f"drain_load_{c}")
            drain = [data_register(self.out_format.bits, f"drain_{r}_{c}") for r in range(rows)]
            drain_valid = [Signal(name=f"drain_valid_{r}_{c}") for r in range(rows)]
            with m.If(advance):
                m.d.sync += drain_load.eq(cells[rows - 1][c].finished)
                with m.If(drain_load):
                    m.d.sync += [d.eq(cells[r][c].done) for r, d in enumerate(drain)]
                    m.d.sync += [v.eq(1) for v in drain_valid]
                with m.Else():
                    m.d.sync += [d.eq(s) for d, s in zip(drain, drain[1:])]
                    m.d.sync += [v.eq(s) for v, s in zip(drain_valid, drain_valid[1:])]
                    m.d.sync += drain_valid[-1].eq(0)
            codes.append(delay(m, advance, drain[0], cols - 1 - c, f"y_{c}", data=True))
            if c == cols - 1:
                m.d.comb += o.valid.eq(drain_valid[0])
        m.d.comb += o.payload.eq(Cat(codes))
        return m
