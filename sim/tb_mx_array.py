"""cocotb testbench: an MX systolic array's Verilog computes random MX matrix products bit-exactly
(`forma.sim.matmul.mx_matmul`), at full rate (MACs/cycle and fill latency measured) and under stalls.

Phase 1 streams tiles of at least `rows` blocks at full rate; phase 2 runs random shapes (1-3
K-blocks, partial last blocks, ragged tiles) drawn from value classes (uniform, scale and element
corners, overflow, underflow, cancelling blocks) with random valid gaps and output back-pressure.
"""

import cocotb
import numpy as np

from ..generators import parameters_of
from . import matmul
from .runner import cocotb_config
from .tb_util import drive_matmul, run_array_test

SCALE_CORNERS = (0, 1, 2, 126, 127, 128, 253, 254, 255)
CLASSES = ("uniform", "corners", "overflow", "underflow", "cancel")


class Operands:
    """Element codes of one MX format sorted into the classes the stimulus draws from."""

    def __init__(self, fmt, out):
        self.format = fmt
        codes = np.arange(1 << fmt.bits)
        values = fmt.element_format.decode(codes)
        finite = np.isfinite(values)
        magnitude = np.abs(np.where(finite, values, 0))
        nonzero = finite & (magnitude > 0)
        self.finite = codes[finite]
        self.specials = codes[~finite]                     # NaN and infinities, if the format has them
        pool = set(codes[finite & (magnitude == 0)].tolist())
        pool |= set(codes[nonzero & (magnitude == magnitude[nonzero].max())].tolist())
        pool |= set(codes[nonzero & (magnitude == magnitude[nonzero].min())].tolist())
        pool |= set(codes[finite & (magnitude == 1)].tolist())
        self.corners = np.array(sorted(pool))
        self.sign_bit = 1 << (fmt.bits - 1) if fmt.element_format.family == "float" else None
        # Scale pairs centred where block dots of the largest elements land on out's overflow
        # edge, or around its smallest subnormal (some round to +-0).
        bias, top = fmt.scale_format.bias, 2 * fmt.emax_elem
        self.centres = {"overflow": bias + (out.emax - top) // 2,
                        "underflow": bias + (out.emin - out.man_bits - top) // 2}

    def draw(self, rng, kind, shape, blocks, flip):
        """(element codes shape, scale codes for `blocks` along the last axis) of a value class;
        `cancel` repeats block 0 as block 1, with every sign flipped when `flip` (one operand)."""
        k = self.format.block_size
        elements = rng.choice(self.corners if kind == "corners" else self.finite, shape)
        if len(self.specials) and rng.random() < 0.3:      # a few NaN/inf elements
            hit = rng.random(shape) < 0.005
            elements = np.where(hit, rng.choice(self.specials, shape), elements)
        if kind == "corners":
            return elements, rng.choice(SCALE_CORNERS, shape[:-1] + (blocks,))
        centre = self.centres.get(kind, self.format.scale_format.bias)
        scales = rng.integers(centre - 6, centre + 7, shape[:-1] + (blocks,))
        if kind == "cancel" and self.sign_bit and shape[-1] >= 2 * k:
            elements = elements.copy()
            first, second = [slice(None)] * len(shape), [slice(None)] * len(shape)
            first[-1], second[-1] = slice(0, k), slice(k, 2 * k)
            elements[tuple(second)] = elements[tuple(first)] ^ (self.sign_bit if flip else 0)
            scales[..., 1] = scales[..., 0]
        return elements, scales


def _block_word(elements, scale, bits):
    word = 0
    for index, code in enumerate(elements):
        word |= int(code) << (index * bits)
    return word | (int(scale) << (len(elements) * bits))


class MXStream:
    """The beats of one MX matmul (tiles of rows x cols outputs, K-block by K-block) and their
    expected results in the order the array drains them."""

    def __init__(self, array, a_scales, a, w_scales, w):
        self.array, rows, cols = array, array.rows, array.cols
        fmt, out, k = array.format, array.out_format, array.block_size
        self.a_scales, self.w_scales = a_scales, w_scales
        self.a = matmul.mx_blocks(a, k)
        self.w = matmul.mx_blocks(np.asarray(w).T, k).T
        self.shape = (a.shape[0], w.shape[1])
        m, n = self.shape
        blocks = self.a.shape[1] // k
        self.tiles, self.beats, self.expected = [], [], []
        for mt in range(-(-m // rows)):
            for nt in range(-(-n // cols)):
                # Past the matrix edge: zero elements with unit scales (results discarded).
                ta = np.zeros((rows, blocks * k), dtype=np.int64)
                tsa = np.full((rows, blocks), 127, dtype=np.int64)
                tw = np.zeros((blocks * k, cols), dtype=np.int64)
                tsw = np.full((blocks, cols), 127, dtype=np.int64)
                part_a = self.a[mt * rows:(mt + 1) * rows]
                part_w = self.w[:, nt * cols:(nt + 1) * cols]
                ta[:len(part_a)] = part_a
                tsa[:len(part_a)] = a_scales[mt * rows:(mt + 1) * rows]
                tw[:, :part_w.shape[1]] = part_w
                tsw[:, :part_w.shape[1]] = w_scales[:, nt * cols:(nt + 1) * cols]
                self.tiles.append((mt, nt))
                self.expected.append(matmul.mx_matmul(tsa, ta, tsw, tw, fmt, out))
                for kb in range(blocks):
                    cut = slice(kb * k, (kb + 1) * k)
                    a_word = sum(_block_word(ta[r, cut], tsa[r, kb], fmt.bits)
                                 << (r * array.block_bits) for r in range(rows))
                    w_word = sum(_block_word(tw[cut, c], tsw[kb, c], fmt.bits)
                                 << (c * array.block_bits) for c in range(cols))
                    last = kb == blocks - 1
                    self.beats.append(a_word | (w_word << (rows * array.block_bits))
                                      | (int(last) << ((rows + cols) * array.block_bits)))
        self.received = []
        self.flat = [(tile, row) for tile in range(len(self.tiles)) for row in range(rows)]

    def receive(self, word):
        """Record one output row; returns a mismatch message or None."""
        tile, row = self.flat[len(self.received)]
        bits, cols = self.array.out_format.bits, self.array.cols
        got = [(word >> (c * bits)) & ((1 << bits) - 1) for c in range(cols)]
        self.received.append(got)
        want = [int(v) for v in self.expected[tile][row]]
        if got == want:
            return None
        out = self.array.out_format
        mt, nt = self.tiles[tile]
        return (f"tile {tile} (rows {mt * self.array.rows}.., cols {nt * cols}..) output row "
                f"{row}: got {[hex(v) for v in got]} = {out.decode(np.array(got)).tolist()}, "
                f"expected {[hex(v) for v in want]} = {out.decode(np.array(want)).tolist()} "
                f"({out.name})")

    def product(self):
        """C assembled from the received rows."""
        rows, cols = self.array.rows, self.array.cols
        result = np.zeros(self.shape, dtype=np.int64)
        for index, (mt, nt) in enumerate(self.tiles):
            block = np.array(self.received[index * rows:(index + 1) * rows])
            part = result[mt * rows:(mt + 1) * rows, nt * cols:(nt + 1) * cols]
            part[...] = block[:part.shape[0], :part.shape[1]]
        return result

    @property
    def rows_received(self):
        return len(self.received)

    @property
    def done(self):
        return self.rows_received == len(self.flat)


async def run_stream(dut, stream, rng, full_rate):
    """Drive one matmul through the array; asserts every output row. Returns cycle counts and
    the fill: cycles from accepting the first block-final beat to the first output row."""
    stats = await drive_matmul(dut, stream, rng, full_rate, stream.beats.__getitem__)
    flag = (stream.array.rows + stream.array.cols) * stream.array.block_bits
    first_last = next(index for index, word in enumerate(stream.beats) if word >> flag)
    return {"beats": stats["beats"], "cycles": stats["cycles"],
            "accept_window": stats["accept_window"],
            "fill": stats["first_output"] - stats["accepted"][first_last]}


def check_product(stream):
    """The assembled C equals the untiled reference."""
    a_scales, w_scales = stream.a_scales, stream.w_scales
    want = matmul.mx_matmul(a_scales, stream.a, w_scales, stream.w, stream.array.format,
                            stream.array.out_format)
    got = stream.product()
    bad = np.argwhere(got != want)
    assert not len(bad), f"C{tuple(bad[0])}: got {got[tuple(bad[0])]:#x}, expected {want[tuple(bad[0])]:#x}"


def random_matmul(rng, operands, kind, m, k, n):
    blocks = -(-k // operands.format.block_size)
    a, sa = operands.draw(rng, kind, (m, k), blocks, True)
    wt, sw = operands.draw(rng, kind, (n, k), blocks, False)
    return sa, a, sw.T, wt.T


async def regression(dut, array, seed, count):
    """Phase 1 at full rate, phase 2 ragged and stalled (seeded by `seed`, about `count`
    outputs); returns the stats."""
    rng = np.random.default_rng(seed)
    rows, cols, k = array.rows, array.cols, array.block_size
    operands = Operands(array.format, array.out_format)

    # Phase 1: full rate, tiles of max(rows, 2) blocks: no `last` stalls, fill and drain measured.
    blocks = max(rows, 2)
    m = rows * max(2, count // (8 * rows * cols))
    stream = MXStream(array, *random_matmul(rng, operands, "uniform", m, blocks * k, 2 * cols))
    stats = await run_stream(dut, stream, rng, True)
    check_product(stream)
    assert stats["fill"] == array.latency, f"fill {stats['fill']} cycles, documented {array.latency}"
    macs_per_cycle = stats["beats"] * array.macs_per_beat / stats["accept_window"]
    dut._log.info(f"full rate {m}x{blocks * k} @ {blocks * k}x{2 * cols}: {stats['beats']} beats in "
                  f"{stats['accept_window']} cycles = {macs_per_cycle:.1f} MACs/cycle of "
                  f"{array.macs_per_beat}; fill {stats['fill']} cycles")

    # Phase 2: ragged shapes, 1-3 blocks, partial last blocks, value classes, gaps and stalls.
    checked, by_blocks = 0, {1: 0, 2: 0, 3: 0}
    while checked < count or min(by_blocks.values()) == 0:
        blocks = int(rng.integers(1, 4))
        length = blocks * k - (int(rng.integers(1, k)) if rng.random() < 0.3 else 0)
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        shape = (int(rng.integers(1, 2 * rows + 2)), length, int(rng.integers(1, 2 * cols + 2)))
        stream = MXStream(array, *random_matmul(rng, operands, kind, *shape))
        await run_stream(dut, stream, rng, False)
        check_product(stream)
        checked += shape[0] * shape[2]
        by_blocks[blocks] += shape[0] * shape[2]
    dut._log.info(f"stalled phase: {checked} outputs checked (by K-blocks {by_blocks}), 0 mismatches")
    return {"macs_per_cycle": macs_per_cycle, "ideal": array.macs_per_beat, "fill": stats["fill"],
            "full_rate": stats, "stalled_outputs": checked, "outputs_by_blocks": by_blocks}


@cocotb.test()
async def mx_array_matches_reference(dut):
    """Random MX matmuls through the array equal mx_matmul, at full rate and under stalls
    (under `runner.mutation_env`: once per mutant of a mutant netlist, see
    forma.sim.mutate_design)."""
    spec, seed, count = cocotb_config()
    array = parameters_of(spec)
    dut._log.info(f"{spec}: seed {seed}, about {count} outputs")
    await run_array_test(dut, ("i",), lambda: regression(dut, array, seed, count), spec, seed)
