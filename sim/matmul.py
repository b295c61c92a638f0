"""Bit-exact matrix multiply, directly and tiled onto a fixed rows x cols systolic array.

Integer arrays: raw integers, exact sums wrapped to the accumulator format as its register wraps,
so the tiled result equals the direct one (wrapping commutes with sums). Minifloat/posit arrays:
exact column words (`ExactSums`), rounded once: the contract of `formats.dot(..., "exact")`.
"""
from dataclasses import dataclass

import numpy as np

from .formats import parse_format
from .formats.ops import dot
from .mac import wrap

FLAGS = ("nan", "pos_inf", "neg_inf", "plus")


class IntegerSums:
    """Sums of raw integer products, wrapped to acc_format."""

    def __init__(self, acc_format):
        self.acc_format = acc_format
        self.pads = (0, 0)

    def matmul(self, a, b):
        return wrap(np.asarray(a, dtype=object) @ np.asarray(b, dtype=object), self.acc_format)

    def add(self, x, y):
        return wrap(np.asarray(x, dtype=object) + y, self.acc_format)


class ExactSums:
    """Exact sums of minifloat/posit products as column words: the accumulator (acc_bits,
    two's complement, units of 2**lsb) below the flags nan, pos_inf, neg_inf, plus (some product
    was not -0), which combine by OR; 0 is the empty sum (see `forma.hdl.exact_product`).

    pads: (a, w) codes the tiler pads a reduction with (their product leaves a sum unchanged).
    """

    def __init__(self, a_format, w_format, acc_bits, lsb, out_format=None, pads=(0, 0)):
        self.a_format, self.w_format = parse_format(a_format), parse_format(w_format)
        self.out_format = None if out_format is None else parse_format(out_format)
        self.acc_bits, self.lsb, self.pads = acc_bits, lsb, pads

    def words(self, value, flags):
        mask = (1 << self.acc_bits) - 1
        word = np.vectorize(lambda v: int(v) & mask, otypes=[object])(value)
        for index, flag in enumerate(flags):
            word = word | (np.asarray(flag, dtype=object) << (self.acc_bits + index))
        return word

    def split(self, words):
        """(signed accumulator values, [flag arrays]) of column words."""
        words = np.asarray(words, dtype=object)
        n, top = self.acc_bits, 1 << (self.acc_bits - 1)
        value = np.vectorize(lambda v: ((int(v) & ((1 << n) - 1)) ^ top) - top, otypes=[object])(words)
        flags = [np.vectorize(lambda v, i=i: bool((int(v) >> (n + i)) & 1), otypes=[bool])(words)
                 for i in range(len(FLAGS))]
        return value, flags

    def matmul(self, a, b):
        """Column words of A @ B for code matrices a (M x K) and b (K x N)."""
        a = self.a_format.check_codes(np.asarray(a, dtype=np.int64))
        b = self.w_format.check_codes(np.asarray(b, dtype=np.int64))
        ma, ea = self.a_format.to_scaled(a)
        mb, eb = self.w_format.to_scaled(b)
        shift = (np.asarray(ea)[:, :, None] + np.asarray(eb)[None, :, :] - self.lsb)
        term = (np.asarray(ma, dtype=object)[:, :, None] * np.asarray(mb, dtype=object)[None])
        # Every product is a multiple of 2**lsb: a negative shift drops only zero bits.
        term = np.vectorize(lambda t, e: int(t) << int(e) if e >= 0 else int(t) >> int(-e),
                            otypes=[object])(term, shift)
        with np.errstate(all="ignore"):
            prod = self.a_format.decode(a)[:, :, None] * self.w_format.decode(b)[None]
        flags = [np.isnan(prod).any(axis=1), (prod == np.inf).any(axis=1),
                 (prod == -np.inf).any(axis=1), (~((prod == 0) & np.signbit(prod))).any(axis=1)]
        return self.words(term.sum(axis=1), flags)

    def add(self, x, y):
        (vx, fx), (vy, fy) = self.split(x), self.split(y)
        return self.words(vx + vy, [p | q for p, q in zip(fx, fy)])

    def round(self, words):
        """out_format codes of column words: one rounding of each exact sum."""
        value, (nan, pos_inf, neg_inf, plus) = self.split(words)
        fmt = self.out_format
        nan = nan | (pos_inf & neg_inf)
        special = np.where(nan, np.nan, np.where(pos_inf, np.inf, np.where(neg_inf, -np.inf,
                                                                          np.where(plus, 0.0, -0.0))))
        use = ~nan & ~pos_inf & ~neg_inf & (value != 0)
        codes = np.asarray(fmt.encode(np.where(use, 0.0, special)))
        if np.any(use):
            codes[use] = fmt.encode_scaled(value[use], np.full(int(use.sum()), self.lsb))
        return codes


def sums_for(array):
    """The sums a built SystolicArray computes (IntegerSums or ExactSums)."""
    if array.family == "int":
        return IntegerSums(array.acc_format)
    from ..hdl.exact_product import pad_codes
    arith = array.lanes.arith
    return ExactSums(array.a_format, array.w_format, arith.acc_bits, arith.lsb, array.out_format,
                     pad_codes(array.a_format, array.w_format))


def _sums(sums):
    return sums if hasattr(sums, "matmul") else IntegerSums(sums)


def exact_reference(a, b, sums):
    """C = A @ B rounded once per element to sums.out_format, straight from `formats.dot`."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return dot(a[:, None, :], b.T[None, :, :], sums.a_format, sums.w_format, sums.out_format,
               accumulate="exact")


def matmul_reference(a, b, sums):
    """C = A @ B, untiled: raw integers wrapped to an integer acc_format, or column words."""
    return _sums(sums).matmul(a, b)


def _tile(matrix, row, col, rows, cols, pad=0):
    """The rows x cols block at (row, col), padded with `pad` past the matrix edge."""
    block = np.full((rows, cols), pad, dtype=object)
    part = np.asarray(matrix, dtype=object)[row:row + rows, col:col + cols]
    block[:part.shape[0], :part.shape[1]] = part
    return block


@dataclass
class WsPass:
    """One weight tile's pass over the activations: outputs = psum + activations @ weights."""
    weights: np.ndarray      # rows x cols block of B (k tile, n tile)
    activations: np.ndarray  # M x rows block of A (every row, k tile)
    source: int | None       # pass whose outputs are this pass's psum (None: `initial`)
    k_tile: int
    n_tile: int
    initial: np.ndarray      # M x cols block of C0, the first k tile's psum (zeros without C0)


def ws_schedule(a, b, rows, cols, pads=(0, 0), c0=None):
    """The passes that compute C0 + A @ B (C0: integers or column words, default zeros) on a
    weight-stationary array, k tiles outermost.

    Pass k*NT + n adds the k-th slice of the reduction to the outputs of pass (k-1)*NT + n, so
    a pass's psums were produced NT passes (NT * M vectors) earlier; the first slice adds to
    C0. pads: the (a, w) codes that fill tiles past the matrix edge.
    """
    (m, k), n = np.shape(a), np.shape(b)[1]
    c0 = np.zeros((m, n), dtype=object) if c0 is None else c0
    k_tiles, n_tiles = -(-k // rows), -(-n // cols)
    return [WsPass(_tile(b, kt * rows, nt * cols, rows, cols, pads[1]),
                   _tile(a, 0, kt * rows, m, rows, pads[0]),
                   None if kt == 0 else (kt - 1) * n_tiles + nt, kt, nt,
                   _tile(c0, 0, nt * cols, m, cols))
            for kt in range(k_tiles) for nt in range(n_tiles)]


def ws_outputs(passes, sums):
    """Each pass's M x cols outputs as the array streams them (psum + this pass's products)."""
    sums, outputs = _sums(sums), []
    for step in passes:
        psum = step.initial if step.source is None else outputs[step.source]
        outputs.append(sums.add(psum, sums.matmul(step.activations, step.weights)))
    return outputs


def ws_assemble(passes, outputs, shape):
    """C (shape M x N) from the outputs of each n tile's last pass."""
    result = np.zeros(shape, dtype=object)
    last_k = max(step.k_tile for step in passes)
    for step, out in zip(passes, outputs):
        if step.k_tile == last_k:
            cols = out.shape[1]
            width = min(cols, shape[1] - step.n_tile * cols)
            result[:, step.n_tile * cols:step.n_tile * cols + width] = out[:, :width]
    return result


@dataclass
class OsTile:
    """One output tile: beat k brings column k of the A block and row k of the B block."""
    a_columns: np.ndarray  # K x rows: A[m tile rows, k] for each k
    b_rows: np.ndarray     # K x cols: B[k, n tile cols] for each k
    m_tile: int
    n_tile: int


def os_schedule(a, b, rows, cols, pads=(0, 0)):
    """The output tiles of A @ B on an output-stationary array, one tile per rows x cols block."""
    (m, k), n = np.shape(a), np.shape(b)[1]
    return [OsTile(_tile(a, mt * rows, 0, rows, k, pads[0]).T,
                   _tile(b, 0, nt * cols, k, cols, pads[1]), mt, nt)
            for mt in range(-(-m // rows)) for nt in range(-(-n // cols))]


def os_outputs(tiles, sums):
    """Each tile's rows x cols results as the array streams them (row 0 first)."""
    return [_sums(sums).matmul(tile.a_columns.T, tile.b_rows) for tile in tiles]


def os_assemble(tiles, outputs, shape):
    """C (shape M x N) from the tiles' results."""
    result = np.zeros(shape, dtype=object)
    for tile, out in zip(tiles, outputs):
        rows, cols = out.shape
        r0, c0 = tile.m_tile * rows, tile.n_tile * cols
        h, w = min(rows, shape[0] - r0), min(cols, shape[1] - c0)
        result[r0:r0 + h, c0:c0 + w] = out[:h, :w]
    return result


def tiled_matmul(a, b, rows, cols, sums, dataflow="ws"):
    """A @ B computed tile by tile as a rows x cols array of `dataflow` computes it: integers
    or column words (sums: an integer acc_format, IntegerSums or ExactSums)."""
    sums, shape = _sums(sums), (np.shape(a)[0], np.shape(b)[1])
    if dataflow == "ws":
        passes = ws_schedule(a, b, rows, cols, sums.pads)
        return ws_assemble(passes, ws_outputs(passes, sums), shape)
    tiles = os_schedule(a, b, rows, cols, sums.pads)
    return os_assemble(tiles, os_outputs(tiles, sums), shape)


# --- MX block formats -------------------------------------------------------------------------
def mx_blocks(elements, block_size):
    """Element codes (..., K) as whole blocks (..., KB * block_size), KB = ceil(K / block_size):
    a partial last block is padded with element code 0 (+0), as `MXFormat.quantize` pads."""
    elements = np.asarray(elements)
    pad = (-elements.shape[-1]) % block_size
    widths = [(0, 0)] * (elements.ndim - 1) + [(0, pad)]
    return np.pad(elements, widths) if pad else elements


def mx_block_dots(a_scales, a_elements, w_scales, w_elements, mx_format, out_format):
    """Codes (M x N x KB) of every block pair's dot, each rounded once to out_format:
    `mx_format.block_dot` of A block (i, kb) (row i of a_elements, scale a_scales[i, kb]) and
    W block (kb, j) (column j of w_elements, scale w_scales[kb, j]). Shapes as `mx_matmul`."""
    fmt, out = parse_format(mx_format), parse_format(out_format)
    k = fmt.block_size
    a = mx_blocks(a_elements, k)
    w = mx_blocks(np.swapaxes(np.asarray(w_elements), -1, -2), k)
    (m, length), n = a.shape[-2:], w.shape[-2]
    a_scales, w_scales = np.asarray(a_scales), np.swapaxes(np.asarray(w_scales), -1, -2)
    if a_scales.shape[-2:] != (m, length // k) or w_scales.shape[-2:] != (n, length // k):
        raise ValueError(f"{fmt.name}: scales must be M x KB and KB x N with KB = {length // k} "
                         f"blocks of {k}, got {a_scales.shape[-2:]} and "
                         f"{w_scales.shape[-2:][::-1]}")
    pairs = np.broadcast_shapes(a.shape[:-2], w.shape[:-2]) + (m, n)
    return fmt.block_dot(np.broadcast_to(a_scales[..., :, None, :], pairs + (length // k,)),
                         np.broadcast_to(a[..., :, None, :], pairs + (length,)),
                         np.broadcast_to(w_scales[..., None, :, :], pairs + (length // k,)),
                         np.broadcast_to(w[..., None, :, :], pairs + (length,)), out)


def mx_matmul(a_scales, a_elements, w_scales, w_elements, mx_format, out_format):
    """C = A @ W for MX operands (OCP MX v1.0 Dot/DotGeneral), out_format codes (M x N):
    C[i, j] = sum over the K-blocks kb, in increasing kb, of block_dot(A block (i, kb),
    W block (kb, j)) each rounded once to out_format (round to nearest even, non-saturating);
    the first block's value starts the sum and each later one is added by out_format's
    round-to-nearest-even addition (`out_format.add`).
    Leading dimensions before M x K and K x N broadcast: a stack of matmuls.

    a_elements: M x K element codes (blocks run along K), a_scales: M x KB E8M0 scale codes;
    w_elements: K x N, w_scales: KB x N; KB = ceil(K / block size), a partial last block padded
    with zero elements (no whole zero block is ever added: it would turn a -0 sum into +0).
    """
    out = parse_format(out_format)
    dots = mx_block_dots(a_scales, a_elements, w_scales, w_elements, mx_format, out)
    total = dots[..., 0]
    for kb in range(1, dots.shape[-1]):
        total = out.add(total, dots[..., kb])
    return total
