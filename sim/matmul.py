"""Bit-exact matrix multiply, directly and tiled onto a fixed rows x cols systolic array.

Raw integers throughout; sums are exact, then wrapped to the accumulator format as its register
wraps, so the tiled result equals the direct one for every shape (wrapping commutes with sums).
"""
from dataclasses import dataclass

import numpy as np

from .mac import wrap


def matmul_reference(a, b, acc_format):
    """C = A @ B for raw integer matrices a (M x K) and b (K x N): exact, wrapped to acc_format."""
    return wrap(np.asarray(a, dtype=object) @ np.asarray(b, dtype=object), acc_format)


def _tile(matrix, row, col, rows, cols):
    """The rows x cols block at (row, col), zero-padded past the matrix edge."""
    block = np.zeros((rows, cols), dtype=object)
    part = np.asarray(matrix, dtype=object)[row:row + rows, col:col + cols]
    block[:part.shape[0], :part.shape[1]] = part
    return block


@dataclass
class WsPass:
    """One weight tile's pass over the activations: outputs = psum + activations @ weights."""
    weights: np.ndarray      # rows x cols block of B (k tile, n tile)
    activations: np.ndarray  # M x rows block of A (every row, k tile)
    source: int | None       # pass whose outputs are this pass's psum (None: zeros)
    k_tile: int
    n_tile: int


def ws_schedule(a, b, rows, cols):
    """The passes that compute A @ B on a weight-stationary array, k tiles outermost.

    Pass k*NT + n adds the k-th slice of the reduction to the outputs of pass (k-1)*NT + n, so
    a pass's psums were produced NT passes (NT * M vectors) earlier.
    """
    (m, k), n = np.shape(a), np.shape(b)[1]
    k_tiles, n_tiles = -(-k // rows), -(-n // cols)
    return [WsPass(_tile(b, kt * rows, nt * cols, rows, cols), _tile(a, 0, kt * rows, m, rows),
                   None if kt == 0 else (kt - 1) * n_tiles + nt, kt, nt)
            for kt in range(k_tiles) for nt in range(n_tiles)]


def ws_outputs(passes, acc_format):
    """Each pass's M x cols outputs as the array streams them (psums wrapped, like the array)."""
    outputs = []
    for step in passes:
        psum = 0 if step.source is None else outputs[step.source]
        outputs.append(wrap(psum + step.activations @ step.weights, acc_format))
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


def os_schedule(a, b, rows, cols):
    """The output tiles of A @ B on an output-stationary array, one tile per rows x cols block."""
    (m, k), n = np.shape(a), np.shape(b)[1]
    return [OsTile(_tile(a, mt * rows, 0, rows, k).T, _tile(b, 0, nt * cols, k, cols), mt, nt)
            for mt in range(-(-m // rows)) for nt in range(-(-n // cols))]


def os_outputs(tiles, acc_format):
    """Each tile's rows x cols results as the array streams them (row 0 first)."""
    return [wrap(tile.a_columns.T @ tile.b_rows, acc_format) for tile in tiles]


def os_assemble(tiles, outputs, shape):
    """C (shape M x N) from the tiles' results."""
    result = np.zeros(shape, dtype=object)
    for tile, out in zip(tiles, outputs):
        rows, cols = out.shape
        r0, c0 = tile.m_tile * rows, tile.n_tile * cols
        h, w = min(rows, shape[0] - r0), min(cols, shape[1] - c0)
        result[r0:r0 + h, c0:c0 + w] = out[:h, :w]
    return result


def tiled_matmul(a, b, rows, cols, acc_format, dataflow="ws"):
    """A @ B computed tile by tile as a rows x cols array of `dataflow` computes it."""
    shape = (np.shape(a)[0], np.shape(b)[1])
    if dataflow == "ws":
        passes = ws_schedule(a, b, rows, cols)
        return ws_assemble(passes, ws_outputs(passes, acc_format), shape)
    tiles = os_schedule(a, b, rows, cols)
    return os_assemble(tiles, os_outputs(tiles, acc_format), shape)
