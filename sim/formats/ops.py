"""Operations across formats: `convert` (one exact rounding) and `dot` (exact or sequential).

Both work for every family through decode/encode and the exact (mantissa, exponent) hooks.
"""
from __future__ import annotations

import numpy as np

from .base import add_scaled, bit_length, mul_scaled
from .parse import parse_format


def _kw(rounding, saturate):
    kw = {}
    if rounding is not None:
        kw["rounding"] = rounding
    if saturate is not None:
        kw["saturate"] = saturate
    return kw


def _exact_decode_ok(fmt) -> bool:
    return not (fmt.family in ("int", "fixed") and fmt.bits > 53)


def convert(codes, src, dst, rounding=None, saturate=None, seed=None):
    """Codes of `src` -> codes of `dst`: one rounding of the exact value (dst's encode rules).

    rounding/saturate None mean dst's defaults (rne and non-saturating for floats/ints, the
    name's Q/O for fixed point). Specials map by value (NaN -> NaN, inf -> dst's inf rule).
    """
    src, dst = parse_format(src), parse_format(dst)
    kw = _kw(rounding, saturate)
    if seed is not None:
        kw["seed"] = seed
    if _exact_decode_ok(src):
        return dst.encode(src.decode(codes), **kw)
    m, e = src.to_scaled(codes)
    return dst.encode_scaled(m, e, **kw)


def _round_exact(fmt, m, e, fallback, use_exact, kw):
    """encode_scaled where use_exact (exact nonzero finite values), encode(fallback) elsewhere."""
    out = fmt.encode(np.where(use_exact, 0.0, fallback), **kw)
    if np.any(use_exact):
        out[use_exact] = fmt.encode_scaled(np.asarray(m)[use_exact], np.asarray(e)[use_exact], **kw)
    return out


def dot(a_codes, b_codes, a_fmt, b_fmt, out_fmt, accumulate="exact", acc_fmt=None,
        rounding=None, saturate=None):
    """Dot product over the last axis (leading axes broadcast), result codes of out_fmt.

    accumulate="exact": the exact sum of the exact products (Kulisch; scaled Python/numpy
      integers, never float64 sums), rounded once to out_fmt. A format with a `quire_dot`
      method (posits) is dispatched to it when a_fmt == b_fmt == out_fmt.
    accumulate="sequential": acc = 0 in acc_fmt (default out_fmt); for each i,
      acc = round_acc(acc + a_i * b_i) with the product exact (a fused multiply-add per step);
      the result is acc converted to out_fmt.
    Specials: a NaN, or inf * 0, or inf - inf gives NaN; an exact zero sum is +0 (-0 only if
    every product is -0).
    """
    a_fmt, b_fmt, out_fmt = (parse_format(f) for f in (a_fmt, b_fmt, out_fmt))
    a, b = np.broadcast_arrays(a_fmt.check_codes(a_codes), b_fmt.check_codes(b_codes))
    kw = _kw(rounding, saturate)
    if accumulate == "exact":
        quire = getattr(a_fmt, "quire_dot", None)
        if quire is not None and a_fmt == b_fmt == out_fmt and not kw:
            return quire(a, b)
        va, vb = a_fmt.decode(a), b_fmt.decode(b)
        with np.errstate(all="ignore"):
            prod = va * vb
        finite = np.all(np.isfinite(va) & np.isfinite(vb), axis=-1)
        pm, pe = mul_scaled(*a_fmt.to_scaled(a), *b_fmt.to_scaled(b))
        nz = pm != 0
        emin = int(pe[nz].min()) if np.any(nz) else 0
        shift = np.where(nz, pe - emin, 0)
        k = max(a.shape[-1], 1)
        if pm.dtype != object and bit_length(pm) + int(shift.max(initial=0)) + k.bit_length() <= 62:
            acc = np.sum(pm.astype(np.int64) << shift, axis=-1)
        else:
            acc = np.sum(pm.astype(object) << shift.astype(object), axis=-1)
        with np.errstate(all="ignore"):
            special = np.sum(prod, axis=-1)           # NaN / inf semantics only
        negzero = np.all((prod == 0) & np.signbit(prod), axis=-1)
        fallback = np.where(finite, np.where(negzero, -0.0, 0.0), special)
        use = finite & (acc != 0)
        return _round_exact(out_fmt, acc, np.full(np.shape(acc), emin), fallback, use, kw)
    if accumulate != "sequential":
        raise ValueError(f"accumulate {accumulate!r} must be 'exact' or 'sequential'")
    acc_fmt = out_fmt if acc_fmt is None else parse_format(acc_fmt)
    acc = acc_fmt.encode(np.zeros(a.shape[:-1]))
    for i in range(a.shape[-1]):
        ai, bi = a[..., i], b[..., i]
        va, vb, vc = a_fmt.decode(ai), b_fmt.decode(bi), acc_fmt.decode(acc)
        with np.errstate(all="ignore"):
            f = va * vb + vc                            # specials and zero signs
        finite = np.isfinite(va) & np.isfinite(vb) & np.isfinite(vc)
        m, e = add_scaled(*mul_scaled(*a_fmt.to_scaled(ai), *b_fmt.to_scaled(bi)),
                          *acc_fmt.to_scaled(acc))
        acc = _round_exact(acc_fmt, m, e, np.where(finite, np.where(f == 0, f, 0.0), f),
                           finite & (m != 0), kw)
    return convert(acc, acc_fmt, out_fmt, rounding, saturate)
