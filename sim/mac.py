"""Bit-exact reference of the integer MAC: running sums with clear, wrapped to the accumulator.

Works on raw integers (the formats' two's-complement or unsigned values), vectorized with numpy.
"""
import numpy as np


def wrap(values, fmt):
    """Reduce integers modulo 2**fmt.bits into fmt's raw range (two's-complement wrap)."""
    span = 1 << fmt.bits
    return (np.asarray(values, dtype=object) - fmt.raw_min) % span + fmt.raw_min


def mac_reference(a, w, clear, acc_format):
    """Accumulator after each input: acc = (clear ? 0 : acc) + a*w, starting from 0, wrapped.

    a, w: raw integer arrays; clear: booleans. Exact (Python integers), then wrapped to
    acc_format exactly as a register of acc_format.bits bits wraps.
    """
    products = np.asarray(a, dtype=object) * np.asarray(w, dtype=object)
    clear = np.asarray(clear, dtype=bool)
    running = np.cumsum(products) if len(products) else products
    index = np.arange(len(products))
    last_clear = np.maximum.accumulate(np.where(clear, index, -1)) if len(products) else index
    before = np.where(last_clear >= 0, running[np.maximum(last_clear, 0)] - products[np.maximum(last_clear, 0)], 0)
    return wrap(running - before, acc_format)
