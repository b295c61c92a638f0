"""cocotb testbench: an MX systolic array's Verilog computes random MX matrix products bit-exactly
(`forma.sim.matmul.mx_matmul`), at full rate (MACs/cycle and fill latency measured) and under stalls.

Phase 1 streams tiles of at least `rows` blocks at full rate; phase 2 runs random shapes (1-3
K-blocks, partial last blocks, ragged tiles) drawn from value classes (uniform, scale and element
corners, overflow, underflow, cancelling blocks) with random valid gaps and output back-pressure.
Phases 3 and 4 bring items to every PE (each item's A and W blocks meeting there, item_tiles):
the MX dot PE's own stimulus, one block pair per item (its element-pair sweep, scale corners and
output edges: every PE's block dot and its rounding), then two block pairs per item whose exact
dots are the operands of the out format's add PE stimulus (every PE's accumulating adder).
"""

import cocotb
import numpy as np

from ..generators import parameters_of
from . import matmul
from .cases import Case
from .cases_mx import DotCase
from .runner import cocotb_config
from .tb_util import drive_matmul, run_array_test

SCALE_CORNERS = (0, 1, 2, 126, 127, 128, 253, 254, 255)
CLASSES = ("uniform", "corners", "overflow", "underflow", "cancel")
DOT_ITEMS = 1 << 15     # the dot PE's block pairs run whole up to this many


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
    """The beats of MX tiles (rows x cols outputs each, fed K-block by K-block) and their expected
    results in the order the array drains them. A tile is (label, A scales (rows, KB), A elements
    (rows, KB * k), W scales (KB, cols), W elements (KB * k, cols)), KB the same in every tile."""

    def __init__(self, array, tiles):
        self.array, rows, cols = array, array.rows, array.cols
        fmt, out, k = array.format, array.out_format, array.block_size
        self.labels, self.beats = [], []
        self.expected = matmul.mx_matmul(*(np.stack([tile[part] for tile in tiles])
                                           for part in range(1, 5)), fmt, out)
        for label, tsa, ta, tsw, tw in tiles:
            self.labels.append(label)
            blocks = tsa.shape[1]
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
        self.flat = [(tile, row) for tile in range(len(self.labels)) for row in range(rows)]

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
        return (f"tile {tile} ({self.labels[tile]}) output row {row}: got "
                f"{[hex(v) for v in got]} = {out.decode(np.array(got)).tolist()}, expected "
                f"{[hex(v) for v in want]} = {out.decode(np.array(want)).tolist()} ({out.name})")

    def rewind(self):
        """Forget the received rows, so the same beats can run again (one run per mutant)."""
        self.received = []

    @property
    def rows_received(self):
        return len(self.received)

    @property
    def done(self):
        return self.rows_received == len(self.flat)


class MatmulStream(MXStream):
    """One MX matmul cut into tiles; past the matrix edge, zero elements with unit scales (their
    results discarded)."""

    def __init__(self, array, a_scales, a, w_scales, w):
        rows, cols, k = array.rows, array.cols, array.block_size
        self.a_scales, self.w_scales = a_scales, w_scales
        self.a = matmul.mx_blocks(a, k)
        self.w = matmul.mx_blocks(np.asarray(w).T, k).T
        self.shape = (a.shape[0], w.shape[1])
        m, n = self.shape
        blocks = self.a.shape[1] // k
        tiles, self.places = [], []
        for mt in range(-(-m // rows)):
            for nt in range(-(-n // cols)):
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
                self.places.append((mt, nt))
                tiles.append((f"rows {mt * rows}.., cols {nt * cols}..", tsa, ta, tsw, tw))
        super().__init__(array, tiles)

    def product(self):
        """C assembled from the received rows."""
        rows, cols = self.array.rows, self.array.cols
        result = np.zeros(self.shape, dtype=np.int64)
        for index, (mt, nt) in enumerate(self.places):
            block = np.array(self.received[index * rows:(index + 1) * rows])
            part = result[mt * rows:(mt + 1) * rows, nt * cols:(nt + 1) * cols]
            part[...] = block[:part.shape[0], :part.shape[1]]
        return result


def item_tiles(array, sa, ea, sb, eb):
    """Tiles that bring every item (A scales sa[p] (KB,) and elements ea[p] (KB, k), W blocks
    sb[p], eb[p]) to every PE as that PE's own A and W blocks: g = min(rows, cols) items a
    tile, slot i on PE (i, (i + d) mod cols), or ((i + d) mod rows, i) when rows > cols, over
    every offset d and every rotation of the items among the slots (max(rows, cols) tiles per
    item). Rows or columns no slot takes get the tile's first item's blocks."""
    rows, cols = array.rows, array.cols
    side = min(rows, cols)
    order = np.arange(-(-len(sa) // side) * side) % len(sa)      # whole tiles, wrapping round
    tiles = []
    for turn in range(side):
        for offset in range(max(rows, cols)):
            for group in np.roll(order, turn).reshape(-1, side):
                a_items, w_items = np.full(rows, group[0]), np.full(cols, group[0])
                places = [(i, (i + offset) % cols) if rows <= cols else ((i + offset) % rows, i)
                          for i in range(side)]
                for item, (r, c) in zip(group, places):
                    a_items[r], w_items[c] = item, item
                tiles.append((f"items {group.tolist()} on PEs {places}",
                              sa[a_items], ea[a_items].reshape(rows, -1),
                              sb[w_items].T, eb[w_items].reshape(cols, -1).T))
    return tiles


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


def dot_items(array, seed, limit):
    """The MX dot PE's stimulus as one-block items (see item_tiles): DotCase's element-pair
    sweep, scale corners and output edges where that is at most `limit` block pairs, else its
    seeded random run of `limit`."""
    case = DotCase(array.format, array.out_format, 1)
    operands = case.exhaustive()
    if len(operands[0]) > limit:
        operands = case.random(limit, seed)
    sa, ea, sb, eb = operands
    return sa[:, None], ea[:, None], sb[:, None], eb[:, None]


def sum_items(array, count, seed):
    """Two-block items whose block dots are exactly the operands of `count` vectors of the out
    format's add PE stimulus (Case add: corner classes, then codes where rounding is hard) where
    block pairs reach both (DotCase.value_blocks), so the accumulator's adder meets them."""
    out = array.out_format
    case = DotCase(array.format, out, 1)
    pairs = Case("add", (out, out), out, 1).random(count, seed)
    made = [case.value_blocks(out.decode(codes)) for codes in pairs]
    both = np.intersect1d(made[0][1], made[1][1])
    picks = [np.searchsorted(indices, both) for _, indices in made]
    return tuple(np.stack([blocks[part][pick] for (blocks, _), pick in zip(made, picks)], axis=1)
                 for part in range(4))


def item_streams(array, seed, count):
    """Phases 3 and 4: (item count, MXStream bringing every item to every PE) of the dot items
    and of the sum items; built once per testbench, since mutant runs repeat them."""
    return [(len(items[0]), MXStream(array, item_tiles(array, *items)))
            for items in (dot_items(array, seed, DOT_ITEMS), sum_items(array, 4 * count, seed))]


async def regression(dut, array, seed, count, items):
    """Phase 1 at full rate, phase 2 ragged and stalled (seeded by `seed`, about `count`
    outputs), phases 3 and 4 the `items` streams (item_streams) at full rate; returns the
    stats."""
    rng = np.random.default_rng(seed)
    rows, cols, k = array.rows, array.cols, array.block_size
    operands = Operands(array.format, array.out_format)

    # Phase 1: full rate, tiles of max(rows, 2) blocks: no `last` stalls, fill and drain measured.
    blocks = max(rows, 2)
    m = rows * max(2, count // (8 * rows * cols))
    matrices = random_matmul(rng, operands, "uniform", m, blocks * k, 2 * cols)
    stream = MatmulStream(array, *matrices)
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
        stream = MatmulStream(array, *random_matmul(rng, operands, kind, *shape))
        await run_stream(dut, stream, rng, False)
        check_product(stream)
        checked += shape[0] * shape[2]
        by_blocks[blocks] += shape[0] * shape[2]
    dut._log.info(f"stalled phase: {checked} outputs checked (by K-blocks {by_blocks}), 0 mismatches")

    # Phase 3: the dot PE's block pairs; phase 4: block dots that are the add PE's operands.
    for _, stream in items:
        stream.rewind()
        await run_stream(dut, stream, rng, True)
    (dots, _), (sums, _) = items
    dut._log.info(f"{dots} dot PE block pairs and {sums} exact block-dot sums through every "
                  f"PE, 0 mismatches")
    return {"macs_per_cycle": macs_per_cycle, "ideal": array.macs_per_beat, "fill": stats["fill"],
            "full_rate": stats, "stalled_outputs": checked, "outputs_by_blocks": by_blocks,
            "dot_items": dots, "sum_items": sums}


@cocotb.test()
async def mx_array_matches_reference(dut):
    """Random MX matmuls through the array equal mx_matmul, at full rate and under stalls
    (under `runner.mutation_env`: once per mutant of a mutant netlist, see
    forma.sim.mutate_design)."""
    spec, seed, count = cocotb_config()
    array = parameters_of(spec)
    dut._log.info(f"{spec}: seed {seed}, about {count} outputs")
    items = item_streams(array, seed, count)
    await run_array_test(dut, ("i",), lambda: regression(dut, array, seed, count, items), spec,
                         seed)
