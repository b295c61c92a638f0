"""cocotb testbench: a systolic array's Verilog computes random matrix products bit-exactly.

Phase 1 streams a tiled matmul at full rate and measures MACs/cycle; phase 2 runs random shapes
(ragged tiles, corner values; ws: half of them C0 + A @ B with any psum words) with random valid
gaps, weight-load gaps and output back-pressure; phase 3 runs one-sign reductions up to the
array's `length`, so every accumulator bit is reached, reductions of signed zeros and (ws) C0
edge sums alone.
Payloads carry random bits while their valid is low.
"""

import cocotb
import numpy as np
from amaranth import Shape

from ..generators import parameters_of
from . import matmul
from .runner import cocotb_config
from .tb_util import drive_matmul, run_array_test


def _bits(values, bits):
    """Concatenate raw integers of `bits` bits each, element 0 in the least significant bits."""
    word, mask = 0, (1 << bits) - 1
    for index, value in enumerate(values):
        word |= (int(value) & mask) << (index * bits)
    return word


def _unbits(word, bits, count, signed=False):
    """The `count` raw integers of `bits` bits packed in `word` (inverse of `_bits`)."""
    mask, values = (1 << bits) - 1, []
    for index in range(count):
        raw = (word >> (index * bits)) & mask
        values.append(raw - (1 << bits) if signed and raw >> (bits - 1) else raw)
    return values


def _width(shape):
    return Shape.cast(shape).width


def corner_pool(fmt, allow_nan=True):
    """The corner classes of `fmt` as raw integers (integer formats) or codes: {min, max, 0, 1,
    -1} for integers; +-0, +-1, +-max, +-min, inf, NaN/NaR (NaN only if `allow_nan`)."""
    if fmt.family == "int":
        return sorted({fmt.raw_min, fmt.raw_max, 0, min(1, fmt.raw_max), max(-1, fmt.raw_min)})
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    finite = np.isfinite(values) & (values != 0)
    magnitude = np.where(finite, np.abs(values), np.nan)
    pool = {int(c) for c in codes[values == 0]} | {int(c) for c in codes[np.isinf(values)]}
    pool |= {int(c) for c in codes[np.abs(values) == 1]}
    pool |= {int(c) for c in codes[magnitude == np.nanmax(magnitude)]}
    pool |= {int(c) for c in codes[magnitude == np.nanmin(magnitude)]}
    if allow_nan:
        pool |= {int(c) for c in codes[np.isnan(values)][:1]}
    return sorted(pool)


def random_matrix(rng, fmt, shape, corners, allow_nan=True):
    """Raw integers (integer formats) or codes of `fmt`: uniform, or (corners) drawn from
    `corner_pool`."""
    if corners:
        return rng.choice(np.array(corner_pool(fmt, allow_nan), dtype=object), shape)
    if fmt.family == "int":
        return rng.integers(fmt.raw_min, fmt.raw_max, shape, endpoint=True).astype(object)
    codes = np.arange(1 << fmt.bits)
    usable = ~np.isnan(fmt.decode(codes)) | allow_nan
    return rng.choice(codes[usable], shape).astype(object)


def edge_sums(bits):
    """Signed `bits`-bit sums that test a zero detector and a leading-one search bit by bit:
    each bit alone (+-2**j), every run of low ones (+-(2**j - 1)) and the most negative value."""
    magnitudes = {1 << j for j in range(bits - 1)} | {(1 << j) - 1 for j in range(2, bits)}
    return np.array(sorted(magnitudes | {-m for m in magnitudes} | {-(1 << (bits - 1))}),
                    dtype=object)


def psum_edges(array, rng):
    """The edge_sums of the accumulator as psum entries: raw integers, or column words with
    no special flag and a random zero sign."""
    if array.family == "int":
        return edge_sums(array.acc_format.bits)
    sums = matmul.sums_for(array)
    edges = edge_sums(sums.acc_bits)
    none = np.zeros(len(edges), bool)
    return sums.words(edges, [none, none, none, rng.random(len(edges)) < 0.5])


def random_psums(rng, array, shape, allow_nan=True):
    """C0 for a ws matmul, anything the psum port takes: raw integers of the accumulator format
    (uniform, its corner classes or psum_edges), or column words (zero, small, full-range or
    edge sums, each flag, NaN and both infinities only if `allow_nan`)."""
    edges = rng.choice(psum_edges(array, rng), shape)
    if array.family == "int":
        uniform, corners = (random_matrix(rng, array.acc_format, shape, c) for c in (False, True))
        return np.where(rng.random(shape) < 0.25, corners,
                        np.where(rng.random(shape) < 0.25, edges, uniform))
    sums = matmul.sums_for(array)
    top = 1 << (sums.acc_bits - 1)
    small = rng.integers(-256, 257, shape).astype(object)
    wide = rng.integers(-top, top, shape).astype(object)
    edges = sums.split(edges)[0]
    value = np.where(rng.random(shape) < 0.5, small, np.where(rng.random(shape) < 0.5, wide, 0))
    value = np.where(rng.random(shape) < 0.2, edges, value)
    nan, pos_inf, neg_inf = (rng.random(shape) < 0.1 for _ in range(3))
    if not allow_nan:
        nan, neg_inf = np.zeros(shape, bool), neg_inf & ~pos_inf
    return sums.words(value, [nan, pos_inf, neg_inf, rng.random(shape) < 0.5])


def values_of(fmt, codes):
    """The values of raw integers (integer formats) or codes of `fmt`, as floats."""
    if fmt.family == "int":
        return np.asarray(codes, dtype=np.float64)
    return fmt.decode(np.asarray(codes))


def same_sign(fmt, code):
    """The finite nonzero raw integers or codes of `fmt` with the sign of `code`."""
    if fmt.family == "int":
        codes = np.arange(fmt.raw_min, fmt.raw_max + 1)
    else:
        codes = np.arange(1 << fmt.bits)
    values, sign = values_of(fmt, codes), np.sign(values_of(fmt, [code])[0])
    return codes[np.isfinite(values) & (np.sign(values) == sign)].astype(object)


def extreme_pairs(array):
    """(a, w) corner codes whose product is the largest, then the most negative, finite one: a
    reduction of `length` such products reaches the accumulator's top bits."""
    a_codes = corner_pool(array.a_format, allow_nan=False)
    w_codes = corner_pool(array.w_format, allow_nan=False)
    products = np.outer(values_of(array.a_format, a_codes), values_of(array.w_format, w_codes))
    products[~np.isfinite(products)] = 0
    pairs = []
    for index in (np.argmax(products), np.argmin(products)):
        i, j = np.unravel_index(index, products.shape)
        if products[i, j] != 0:
            pairs.append((a_codes[i], w_codes[j]))
    return pairs


def signed_zero_pools(array):
    """(a, w) code pools whose every product is a zero of one sign: one side one of its zeros,
    the other its finite nonzero codes of one sign, for each zero and both signs. A reduction of
    such products is -0 or +0, which only the class flags tell apart; none when neither operand
    format has a negative zero."""
    formats, pools = (array.a_format, array.w_format), []
    for side in (0, 1):
        zero_fmt, other = formats[side], formats[1 - side]
        if zero_fmt.family != "float" or other.family == "int":
            continue
        codes, other_codes = np.arange(1 << zero_fmt.bits), np.arange(1 << other.bits)
        zeros = codes[values_of(zero_fmt, codes) == 0]
        values = values_of(other, other_codes)
        for zero in (zeros if len(zeros) > 1 else []):
            for signed in (values > 0, values < 0):
                chosen = other_codes[np.isfinite(values) & signed].astype(object)
                if len(chosen):
                    pair = (np.array([zero], dtype=object), chosen)
                    pools.append(pair if side == 0 else pair[::-1])
    return pools


class Stream:
    """The beats of one matmul for the array's ports, and their expected outputs in order."""

    def __init__(self, array, a, b, c0=None):
        """C0 + A @ B; c0 (ws only): the first k tile's psums, integers or column words."""
        self.array, self.sums = array, matmul.sums_for(array)
        rows, cols, lanes = array.rows, array.cols, array.lanes
        self.a_bits, self.w_bits = _width(lanes.a_shape), _width(lanes.w_shape)
        self.word_bits, self.word_signed = _width(lanes.word_shape), array.family == "int"
        if array.dataflow == "ws":
            self.passes = matmul.ws_schedule(a, b, rows, cols, self.sums.pads, c0)
            self.expected = matmul.ws_outputs(self.passes, self.sums)
            self.loads = [_bits(row, self.w_bits) for p in self.passes for row in p.weights]
            self.beats = [(p, m) for p in range(len(self.passes))
                          for m in range(len(self.passes[p].activations))]
        else:
            self.tiles = matmul.os_schedule(a, b, rows, cols, self.sums.pads)
            self.expected = matmul.os_outputs(self.tiles, self.sums)
            self.loads = []
            self.beats = [(t, k) for t in range(len(self.tiles))
                          for k in range(len(self.tiles[t].a_columns))]
        self.rounded = array.out_format is not None
        self.expected_codes = ([self.sums.round(out) for out in self.expected]
                               if self.rounded else None)
        self.results = [[] for _ in self.expected]   # words received, per pass or tile
        self.codes = [[] for _ in self.expected]     # rounded codes received
        self.flat = [(index, row) for index, out in enumerate(self.expected)
                     for row in range(len(out))]
        self.rows_received = 0

    def beat_word(self, index):
        """(payload, ready to send): the input payload of beat `index`; a ws beat whose psum comes
        from an earlier pass waits until that pass's output row has arrived."""
        array, (unit, k) = self.array, self.beats[index]
        a_bits, word_bits = self.a_bits, self.word_bits
        if array.dataflow == "ws":
            step = self.passes[unit]
            if step.source is None:
                psum = step.initial[k]
            elif len(self.results[step.source]) > k:
                psum = self.results[step.source][k]
            else:
                return None, False
            word = _bits(step.activations[k], a_bits)
            word |= _bits(psum, word_bits) << (array.rows * a_bits)
            word |= int(k == 0) << (array.rows * a_bits + array.cols * word_bits)
            return word, True
        tile = self.tiles[unit]
        word = _bits(tile.a_columns[k], a_bits)
        word |= _bits(tile.b_rows[k], self.w_bits) << (array.rows * a_bits)
        last = k == len(tile.a_columns) - 1
        word |= int(last) << (array.rows * a_bits + array.cols * self.w_bits)
        return word, True

    def receive(self, word):
        """Record one output beat; returns a mismatch message or None."""
        index, row = self.flat[self.rows_received]
        cols, array = self.array.cols, self.array
        self.rows_received += 1
        problems = []
        if self.rounded:
            code_word = word >> (cols * self.word_bits) if array.dataflow == "ws" else word
            got = _unbits(code_word, array.out_format.bits, cols)
            self.codes[index].append(got)
            want = [int(v) for v in self.expected_codes[index][row]]
            if got != want:
                problems.append(f"codes got {got}, expected {want} ({array.out_format.name})")
        if not self.rounded or array.dataflow == "ws":
            got = _unbits(word, self.word_bits, cols, self.word_signed)
            self.results[index].append(got)
            want = [int(v) for v in self.expected[index][row]]
            if got != want:
                problems.append(f"got {got}, expected {want} ({self.describe()})")
        if problems:
            unit = "pass" if array.dataflow == "ws" else "tile"
            return f"{unit} {index} output row {row}: " + "; ".join(problems)
        return None

    def describe(self):
        if self.array.family == "int":
            return self.array.acc_format.name
        return (f"column words: {self.sums.acc_bits}-bit sum in units of 2**{self.sums.lsb}, "
                f"then flags nan, pos_inf, neg_inf, plus")

    def product(self, shape):
        """C assembled from the received outputs (rounded codes when the array rounds)."""
        received = self.codes if self.rounded else self.results
        outputs = [np.array(rows, dtype=object) for rows in received]
        if self.array.dataflow == "ws":
            return matmul.ws_assemble(self.passes, outputs, shape)
        return matmul.os_assemble(self.tiles, outputs, shape)

    @property
    def done(self):
        return self.rows_received == len(self.flat)


async def run_stream(dut, stream, rng, full_rate):
    """Drive one matmul through the array; returns cycle counts. Asserts every output row."""
    stats = await drive_matmul(dut, stream, rng, full_rate,
                               lambda index: stream.beat_word(index)[0], stream.loads)
    return {key: stats[key] for key in ("beats", "cycles", "accept_window")}


def check_product(stream, a, b, c0=None):
    """The hardware's assembled C equals the direct (untiled) reference: `formats.dot` rounded
    once per element for rounding arrays, else the untiled integers or column words; with C0,
    the untiled C0 + A @ B (rounded once when the array rounds)."""
    shape = (np.shape(a)[0], np.shape(b)[1])
    got = stream.product(shape)
    if c0 is not None:
        want = stream.sums.add(c0, matmul.matmul_reference(a, b, stream.sums))
        want = stream.sums.round(want) if stream.rounded else want
    elif stream.rounded:
        want = matmul.exact_reference(a, b, stream.sums)
    else:
        want = matmul.matmul_reference(a, b, stream.sums)
    bad = np.argwhere(got != want)
    assert not len(bad), (f"C{tuple(bad[0])} of a {shape[0]}x{np.shape(a)[1]} @ "
                          f"{np.shape(a)[1]}x{shape[1]} matmul: got {got[tuple(bad[0])]}, "
                          f"expected {want[tuple(bad[0])]}")


THROUGHPUT_SHARE = 0.95   # of rows x cols MACs/cycle the full-rate phase must reach


async def regression(dut, array, spec, seed, count):
    """The array regression from reset: a full-rate tiled matmul, then ragged random matmuls
    with corner values under stalls; asserts every output row, returns the statistics."""
    rng = np.random.default_rng(seed)
    rows, cols = array.rows, array.cols
    # A rounding format without NaN cannot take a NaN sum (the reference refuses it).
    out = array.out_format
    allow_nan = out is None or out.family == "posit" or out.has_nan

    # Phase 1: a full-rate matmul long enough that fill and drain are a small share.
    n = 2 * cols
    if array.dataflow == "ws":
        m_rows = max(2 * rows + array.groups + 2, count // (2 * n))
        shape = (m_rows, 2 * rows, n)
    else:
        k = rows  # the shortest tiles the contract runs at full rate
        shape = (rows * max(2, count // (2 * n * rows)), k, n)
    a = random_matrix(rng, array.a_format, shape[:2], False, allow_nan)
    b = random_matrix(rng, array.w_format, shape[1:], False, allow_nan)
    stream = Stream(array, a, b)
    stats = await run_stream(dut, stream, rng, True)
    check_product(stream, a, b)
    macs_per_cycle = stats["beats"] * rows * cols / stats["accept_window"]
    useful = shape[0] * shape[1] * shape[2] / stats["cycles"]
    dut._log.info(f"full rate {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]}: {stats['beats']} "
                  f"beats in {stats['accept_window']} cycles = {macs_per_cycle:.2f} MACs/cycle "
                  f"of {rows * cols}; end to end {useful:.2f} useful MACs/cycle")

    # Phase 2: ragged random shapes and corner values under random gaps and back-pressure, the
    # first with one-beat tiles (os: back to back, as close as i.ready lets them come).
    checked, shape = 0, (3 * rows + 1, 1, 2 * cols + 1)
    while checked < count // 2:
        corners = rng.random() < 0.3
        a = random_matrix(rng, array.a_format, shape[:2], corners, allow_nan)
        b = random_matrix(rng, array.w_format, shape[1:], corners, allow_nan)
        c0 = (random_psums(rng, array, (shape[0], shape[2]), allow_nan)
              if array.dataflow == "ws" and rng.random() < 0.5 else None)
        stream = Stream(array, a, b, c0)
        await run_stream(dut, stream, rng, False)
        check_product(stream, a, b, c0)
        checked += shape[0] * shape[2]
        shape = (int(rng.integers(1, 3 * rows + 2)), int(rng.integers(1, 3 * rows + 2)),
                 int(rng.integers(1, 2 * cols + 2)))
    dut._log.info(f"stalled phase: {checked} outputs checked, 0 mismatches")

    # Phase 3: products of one sign over reductions of 1, 2, 4, ... `length` terms, so the sums'
    # leading one reaches every accumulator bit (rounding: every exponent), then `length` terms
    # of the largest product of that sign; then short reductions of signed-zero products, and
    # (ws) C0 edge sums alone.
    lengths = sorted({min(1 << j, array.length) for j in range(array.length.bit_length() + 1)})
    matmuls = []
    for a_code, w_code in extreme_pairs(array):
        a_pool, w_pool = same_sign(array.a_format, a_code), same_sign(array.w_format, w_code)
        matmuls += [(rng.choice(a_pool, (rows, k)), rng.choice(w_pool, (k, cols)))
                    for k in lengths]
        matmuls.append((np.full((rows, array.length), a_code, object),
                        np.full((array.length, cols), w_code, object)))
    # Short reductions of zeros of one sign over many rows of A, so -0 operands meet stalls in
    # every register while earlier results wait at the output.
    matmuls += [(rng.choice(a_pool, (4 * rows, k)), rng.choice(w_pool, (k, cols)))
                for a_pool, w_pool in signed_zero_pools(array) for k in range(1, 2 * rows + 2)]
    matmuls = [(a, b, None) for a, b in matmuls]
    if array.dataflow == "ws":
        # C0 alone through every row (A all zero codes): each edge sum stands in every psum
        # register, seen by its zero test and the rounding.
        edges = psum_edges(array, rng)
        c0 = np.array([np.roll(edges, -c) for c in range(cols)], dtype=object).T
        matmuls.append((np.zeros((len(edges), rows), object),
                        random_matrix(rng, array.w_format, (rows, cols), False, allow_nan), c0))
    for a, b, c0 in matmuls:
        stream = Stream(array, a, b, c0)
        await run_stream(dut, stream, rng, False)
        check_product(stream, a, b, c0)
    dut._log.info(f"long phase: one-sign reductions of up to {array.length} terms, of signed "
                  f"zeros{', and C0 edge sums' if array.dataflow == 'ws' else ''}, 0 mismatches")
    return {"spec": spec, "seed": seed, "macs_per_cycle": macs_per_cycle,
            "ideal": rows * cols, "useful_macs_per_cycle": useful,
            "full_rate": stats, "stalled_outputs": checked}


def streams_of(array):
    """The input streams of `array`, idle during a reset."""
    return ("i", "wl") if array.dataflow == "ws" else ("i",)


def mutant_regression(dut, array, spec, seed, count):
    """The regression as one mutant run (see tb_util.mutation_runs): it also fails on full-rate
    throughput below THROUGHPUT_SHARE."""
    async def run():
        stats = await regression(dut, array, spec, seed, count)
        if stats["macs_per_cycle"] < THROUGHPUT_SHARE * stats["ideal"]:
            raise AssertionError(f"full rate {stats['macs_per_cycle']:.2f} MACs/cycle, "
                                 f"below {THROUGHPUT_SHARE} of {stats['ideal']}")
    return run


@cocotb.test()
async def array_matches_reference(dut):
    """Random matmuls through the array equal the tiled reference, at full rate and under stalls
    (under `runner.mutation_env`: once per mutant of a mutant netlist, see
    forma.sim.mutate_design)."""
    spec, seed, count = cocotb_config()
    array = parameters_of(spec)
    dut._log.info(f"{spec}: seed {seed}, about {count} outputs, packing x{array.factor}")
    await run_array_test(dut, streams_of(array), lambda: regression(dut, array, spec, seed, count),
                         spec, seed, mutant_regression(dut, array, spec, seed, count))
