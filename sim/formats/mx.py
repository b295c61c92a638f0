"""OCP Microscaling (MX v1.0) block formats and NVFP4: block quantize/dequantize and exact block dot.

A block is k element codes plus one shared scale code; value_i = scale * element_i.

Names: mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4 (k = 32, E8M0 scale, FP elements
float8_e4m3fn / float8_e5m2 / float6_e3m2fn / float6_e2m3fn / float4_e2m1fn); mxint8 (k = 32,
E8M0 scale, element = 8-bit two's complement with implicit scale 2**-6, i.e. fixed<8,2>);
nvfp4 (k = 16, float8_e4m3fn scale, float4_e2m1fn elements).

Quantization (MX v1.0 §6.3, conversion of a vector of scalars):
  shared_exp = floor(log2(max_i |V_i|)) - emax_elem, emax_elem = exponent of the element's
  largest normal (E4M3 8, E5M2 15, E3M2 4, E2M3 2, E2M1 2, INT8 0); clamped below at -127
  (an all-zero block gets -127); above 127 the scale is NaN. X = 2**shared_exp (exact E8M0).
  P_i = V_i / X rounded to nearest even, saturating to +-max normal of the element (FP elements;
  INT8 elements clamp symmetrically to +-127/64 as the OCP reference code does).
  A block holding a NaN or an infinity gets the NaN scale 0xFF (its elements are encoded 0):
  per §5.3 (E8M0 scale) a NaN scale makes every element of the block NaN on decoding.
NVFP4 (NVIDIA's recipe): scale = E4M3(amax / 6 / tensor_scale) rounded to nearest even and
  saturated; elements = E2M1(V_i / (scale * tensor_scale)) rne, saturating; a zero scale gives
  zero elements. tensor_scale (float32 in NVIDIA's use) is optional, default 1.
Block dot (§6.2 Dot product of two MX blocks): 2**(sa + sb) * sum_i(a_i * b_i), computed exactly;
`block_dot` rounds it once to an output format.
The element-wise NumberFormat methods (decode, encode, mul, ...) act on element codes with a
unit scale, i.e. they are the element format's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import NumberFormat, bit_length, mul_scaled
from .integer import FixedFormat
from .minifloat import FloatFormat, NAMED

_E8M0 = FloatFormat(*NAMED["float8_e8m0fnu"])
_E4M3 = FloatFormat(*NAMED["float8_e4m3fn"])
_MXINT8_ELEMENT = FixedFormat(8, 2, signed=True, quant="RND_CONV", overflow="SAT_SYM")

MX_SPECS = {
    "mxfp8_e4m3": ("float8_e4m3fn", 32, "e8m0"),
    "mxfp8_e5m2": ("float8_e5m2", 32, "e8m0"),
    "mxfp6_e3m2": ("float6_e3m2fn", 32, "e8m0"),
    "mxfp6_e2m3": ("float6_e2m3fn", 32, "e8m0"),
    "mxfp4": ("float4_e2m1fn", 32, "e8m0"),
    "mxint8": ("mxint8", 32, "e8m0"),
    "nvfp4": ("float4_e2m1fn", 16, "e4m3"),
}


def parse_mx(text):
    """MX/NVFP4 format for a name in MX_SPECS, else None."""
    if text not in MX_SPECS:
        return None
    elem, k, scale = MX_SPECS[text]
    element = _MXINT8_ELEMENT if elem == "mxint8" else FloatFormat(*NAMED[elem])
    return MXFormat(text, element, _E8M0 if scale == "e8m0" else _E4M3, k)


@dataclass(frozen=True)
class MXFormat(NumberFormat):
    """k element codes sharing one scale code; see the module docstring."""

    label: str
    element_format: NumberFormat
    scale_format: FloatFormat
    block_size: int

    family = "mx"

    @property
    def name(self) -> str:
        return self.label

    @property
    def bits(self) -> int:
        return self.element_format.bits

    @property
    def emax_elem(self) -> int:
        """Exponent of the element format's largest normal value."""
        if isinstance(self.element_format, FloatFormat):
            return self.element_format.emax
        return 0

    # --- element-wise interface (unit scale) -----------------------------------------------
    def valid_code_mask(self, codes):
        return self.element_format.valid_code_mask(codes)

    def decode(self, codes):
        """Element values with a unit scale (float64, exact)."""
        return self.element_format.decode(codes)

    def encode(self, x, rounding="rne", saturate=False, seed=None):
        """Element codes for values with a unit scale (the element format's encode)."""
        return self.element_format.encode(x, rounding=rounding, saturate=saturate, seed=seed)

    def to_scaled(self, codes):
        return self.element_format.to_scaled(codes)

    def encode_scaled(self, m, e, rounding="rne", saturate=False, seed=None):
        return self.element_format.encode_scaled(m, e, rounding=rounding, saturate=saturate, seed=seed)

    def _binary(self, op, a, b):
        return self.element_format._binary(op, a, b)

    def _fast(self, op, *codes):
        return self.element_format._fast(op, *codes)

    # --- blocks ------------------------------------------------------------------------
    def _blocks(self, x):
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[-1]
        pad = (-n) % self.block_size
        if pad:
            x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,))], axis=-1)
        return x.reshape(x.shape[:-1] + (-1, self.block_size)), n

    def quantize(self, x, tensor_scale=1.0):
        """float64 array -> (scale codes [..., nblocks], element codes [..., n]).

        Blocks run along the last axis; a partial last block is padded with zeros. Rules in the
        module docstring (rne, saturating elements). tensor_scale applies to nvfp4 only.
        """
        xb, n = self._blocks(x)
        special = ~np.all(np.isfinite(xb), axis=-1)
        xf = np.where(np.isfinite(xb), xb, 0.0)
        amax = np.max(np.abs(xf), axis=-1)
        if self.scale_format == _E8M0:
            _, ex = np.frexp(np.where(amax > 0, amax, 1.0))
            shared = np.where(amax > 0, ex.astype(np.int64) - 1, -127) - self.emax_elem
            shared = np.maximum(shared, -127)
            special |= shared > 127
            shared = np.minimum(shared, 127)
            scale_codes = (shared + 127).astype(np.uint8)
            scaled = np.ldexp(xf, -shared[..., None])           # exact power-of-two scaling
        else:
            scale_codes = self.scale_format.encode(amax / 6.0 / tensor_scale, saturate=True)
            s = self.scale_format.decode(scale_codes) * tensor_scale
            with np.errstate(all="ignore"):
                scaled = np.where(s[..., None] > 0, xf / s[..., None], 0.0)
        elems = self.element_format.encode(scaled, rounding="rne", saturate=True)
        if np.any(special):
            scale_codes = np.where(special, self.scale_format.nan_code, scale_codes).astype(np.uint8)
            elems = np.where(special[..., None], 0, elems).astype(elems.dtype)
        elems = elems.reshape(elems.shape[:-2] + (-1,))[..., :n]
        return scale_codes, elems

    def scale_values(self, scale_codes, tensor_scale=1.0):
        """float64 scale of each block (NaN for the NaN scale)."""
        return self.scale_format.decode(scale_codes) * tensor_scale

    def dequantize(self, scale_codes, element_codes, tensor_scale=1.0):
        """Exact float64 values scale * element (all NaN in a block with a NaN scale)."""
        ev = self.element_format.decode(element_codes)
        n = ev.shape[-1]
        evb, _ = self._blocks(ev)
        out = evb * self.scale_values(scale_codes, tensor_scale)[..., None]
        return out.reshape(out.shape[:-2] + (-1,))[..., :n]

    def block_dot_exact(self, sa, ea, sb, eb):
        """Exact dot of blocks: (mantissa, exponent, nan mask), value = m * 2**e.

        sa/sb: scale codes [..., nblocks]; ea/eb: element codes [..., nblocks * k] as returned by
        `quantize`; the result has one entry per block pair [..., nblocks]. E8M0 scales only (NVFP4
        scales are not powers of two; use `dequantize` and ops.dot for it).
        """
        if self.scale_format != _E8M0:
            raise ValueError(f"{self.name}: block_dot_exact needs power-of-two (E8M0) scales")
        k = self.block_size
        ea, eb = (np.asarray(x) for x in (ea, eb))
        if ea.shape[-1] % k or eb.shape[-1] % k:
            raise ValueError(f"{self.name}: element arrays must hold whole blocks of {k}")
        ea = ea.reshape(ea.shape[:-1] + (-1, k))
        eb = eb.reshape(eb.shape[:-1] + (-1, k))
        ma, xa = self.element_format.to_scaled(ea)
        mb, xb = self.element_format.to_scaled(eb)
        pm, pe = mul_scaled(ma, xa, mb, xb)
        emin = int(pe.min(initial=0))
        shift = pe - emin
        if pm.dtype != object and bit_length(pm) + int(shift.max(initial=0)) + 6 <= 62:
            acc = np.sum(pm << shift, axis=-1)
        else:
            acc = np.sum(pm.astype(object) << shift.astype(object), axis=-1)
        sa, sb = np.asarray(sa).astype(np.int64), np.asarray(sb).astype(np.int64)
        nan = (sa == 0xFF) | (sb == 0xFF)
        return acc, (sa - 127) + (sb - 127) + emin, nan

    def block_dot(self, sa, ea, sb, eb, out_fmt, rounding="rne", saturate=False):
        """Dot of MX blocks rounded once to out_fmt. A NaN scale gives NaN; a block pair holding a
        NaN or infinite element gives what `ops.dot` gives for its elements (NaN for inf x 0 or
        inf - inf, else the infinity), which no finite scale changes."""
        from .ops import dot
        from .parse import parse_format
        out_fmt = parse_format(out_fmt)
        m, e, nan = self.block_dot_exact(sa, ea, sb, eb)
        k = self.block_size
        ea, eb = (np.asarray(x).reshape(np.shape(x)[:-1] + (-1, k)) for x in (ea, eb))
        special = ~nan & ~(np.isfinite(self.element_format.decode(ea)).all(axis=-1)
                           & np.isfinite(self.element_format.decode(eb)).all(axis=-1))
        zero = np.zeros(np.shape(m))
        out = out_fmt.encode(np.where(nan, np.nan, zero)) if np.any(nan) else out_fmt.encode(zero)
        if np.any(special):
            out[special] = dot(ea[special], eb[special], self.element_format, self.element_format,
                               out_fmt)
        ok = ~nan & ~special & (m != 0)
        if np.any(ok):
            out[ok] = out_fmt.encode_scaled(np.asarray(m)[ok], np.asarray(e)[ok],
                                            rounding=rounding, saturate=saturate)
        return out
