"""Layer list -> dataflow engine specs for the native backend, folding and an integer reference.

Dense/conv layers become MAC engines, max pools max engines; relu, quant and shift layers fuse into
the preceding engine's epilogue. Anything else is refused with the node named.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forma.errors import SpecError
from forma.hdl.dataflow import RELU, EngineSpec, Requantize
from forma.hdl.mac import int_shape
from forma.sim.formats import FixedFormat, FloatFormat

from .qonnx_import import Network, exact_fixed

#: layer kinds the native backend maps, and those it refuses
NATIVE_KINDS = ("quant", "dense", "conv2d", "relu", "maxpool2d", "shift", "reshape")
REFUSED_KINDS = ("add", "global_avgpool", "transpose")
#: resource model per MAC lane (one multiplier each): LUT4s per product bit and per accumulator bit
LUTS_PER_PRODUCT_BIT, LUTS_PER_ACC_BIT, LUTS_PER_ENGINE = 1, 2, 60


def unsupported(network: Network) -> list[str]:
    """Why the native backend cannot map this network (empty: it can), one sentence per node."""
    reasons = []
    for layer in network.layers:
        if layer.kind not in NATIVE_KINDS:
            reasons.append(f"node '{layer.name}': {layer.kind} layers are not supported by the "
                           f"native backend (it maps {', '.join(NATIVE_KINDS)})")
        elif layer.kind == "quant" and layer.requant.kind == "minifloat":
            reasons.append(f"node '{layer.name}': minifloat (FloatQuant "
                           f"{layer.output.format.name}) requantization of activations is not "
                           "supported by the native backend")
    return reasons


def raw_values(fmt, codes) -> np.ndarray:
    """Raw integers of `codes` in exact_fixed(fmt): value = raw * 2**-frac_bits (exact)."""
    if isinstance(fmt, FixedFormat):
        return fmt.to_raw(np.asarray(codes)).astype(np.int64)
    values = fmt.decode(np.asarray(codes))
    frac = exact_fixed(fmt).frac_bits
    finite = np.where(np.isfinite(values), values, 0.0)  # NaN/Inf codes never reach a MAC
    return (finite * 2.0 ** frac).astype(np.int64)


def _code_table(fmt):
    """Code -> raw table for a float input format (None for fixed formats: the code is the raw)."""
    if isinstance(fmt, FixedFormat):
        return None
    return tuple(int(v) for v in raw_values(fmt, np.arange(1 << fmt.bits)))


def _mac_spec(layer, x, weight_km, gather):
    acc = layer.output.format
    fx, fw = exact_fixed(x.format), exact_fixed(layer.weight_format)
    shift = acc.frac_bits - fx.frac_bits - fw.frac_bits
    w = raw_values(layer.weight_format, weight_km) << shift
    bias = None
    if layer.bias is not None:
        fb = exact_fixed(layer.bias_format)
        bias = raw_values(layer.bias_format, layer.bias) << (acc.frac_bits - fb.frac_bits)
    in_shape = int_shape(x.format) if isinstance(x.format, FixedFormat) else \
        int_shape(FixedFormat(x.format.bits, x.format.bits, False))
    spec = EngineSpec("mac", layer.name, in_shape, int(np.prod(x.shape[1:])), None,
                      gather=gather, weight=w, bias=bias, decode=_code_table(x.format))
    spec.out_shape = spec.acc_shape()
    return spec


def _window_gather(in_shape, out_shape, kernel, strides, pads, per_channel):
    """[outputs, window] input addresses (-1: padding) of a channels-last window op."""
    _, h, w, c = in_shape
    _, oh, ow, oc = out_shape
    kh, kw = kernel
    rows = []
    for oy in range(oh):
        for ox in range(ow):
            for ch in (range(oc) if per_channel else [None]):
                row = []
                for dy in range(kh):
                    for dx in range(kw):
                        y, xx = oy * strides[0] - pads[0] + dy, ox * strides[1] - pads[1] + dx
                        inside = 0 <= y < h and 0 <= xx < w
                        channels = [ch] if per_channel else range(c)
                        row += [((y * w + xx) * c + cc) if inside else -1 for cc in channels]
                rows.append(row)
    return np.array(rows, dtype=np.int64)


def plan(network: Network) -> list[EngineSpec]:
    """The engine specs of `network` (lanes 1; see `fold`). SpecError for unsupported layers."""
    reasons = unsupported(network)
    if reasons:
        raise SpecError(reasons[0])
    first = network.layers[0]
    if first.kind != "quant" or first.inputs != (None,):
        raise SpecError(f"node '{first.name}': the network must start with a quantizer of the "
                        "graph input")
    x, specs = first.output, []
    for layer in network.layers[1:]:
        src = layer.inputs[0]
        if src is not None and src.name != x.name:
            raise SpecError(f"node '{layer.name}': reads '{src.name}', not the previous layer's "
                            "output; the native backend maps chains of layers only")
        if layer.kind == "dense":
            specs.append(_mac_spec(layer, x, layer.weight, None))
        elif layer.kind == "conv2d":
            w = layer.weight  # [out, kh, kw, in] -> [kh*kw*in, out]
            gather = _window_gather(x.shape, layer.output.shape, layer.attrs["kernel_shape"],
                                    layer.attrs["strides"], layer.attrs["pads"], False)
            specs.append(_mac_spec(layer, x, w.reshape(w.shape[0], -1).T, gather))
        elif layer.kind == "maxpool2d":
            gather = _window_gather(x.shape, layer.output.shape, layer.attrs["kernel_shape"],
                                    layer.attrs["strides"], layer.attrs["pads"], True)
            shape = int_shape(x.format)
            specs.append(EngineSpec("max", layer.name, shape, int(np.prod(x.shape[1:])), shape,
                                    gather=gather))
        elif layer.kind in ("relu", "quant"):
            if not specs:
                raise SpecError(f"node '{layer.name}': a {layer.kind} before the first dense, "
                                "conv or pool layer is not supported by the native backend")
            if layer.kind == "relu":
                specs[-1].epilogue.append(RELU)
            else:
                q, fmt = layer.requant, layer.output.format
                specs[-1].epilogue.append(Requantize(q.shift, q.multiplier, q.rounding,
                                                     fmt.raw_min, fmt.raw_max, q.saturate))
                specs[-1].out_shape = int_shape(fmt)
        x = layer.output
    return specs


@dataclass
class Folding:
    """The chosen lanes per engine and why: cycles per engine, modelled multipliers and LUTs."""
    lanes: list
    cycles: list
    ii_cycles: int
    latency_cycles: int
    multipliers: int
    luts_model: int
    reason: str


def _cost(specs, lanes):
    mults = sum(P for s, P in zip(specs, lanes) if s.kind == "mac")
    luts = LUTS_PER_ENGINE * len(specs)
    for s, P in zip(specs, lanes):
        if s.kind == "mac":
            xb = s.in_shape.width
            luts += P * (xb * s.weight_bits() * LUTS_PER_PRODUCT_BIT
                         + s.acc_shape().width * LUTS_PER_ACC_BIT)
    return mults, luts


def lane_options(spec) -> list[int]:
    return [P for P in range(1, spec.channels + 1) if spec.channels % P == 0]


def fold(specs, ii=1, max_luts=None, max_dsps=None) -> Folding:
    """Choose lanes per engine: the smallest initiation interval >= `ii` (cycles) whose modelled
    cost (one multiplier per lane, LUT model) fits `max_dsps`/`max_luts`, with the fewest lanes
    per engine that reach it. Sets `spec.lanes`; SpecError if even one lane each does not fit."""
    if not isinstance(ii, int) or ii < 1:
        raise SpecError(f"initiation interval {ii!r}: give a number of cycles >= 1")
    options = [lane_options(s) for s in specs]
    fastest = max(s.cycles(opts[-1]) for s, opts in zip(specs, options))
    levels = sorted({c for s, opts in zip(specs, options) for c in map(s.cycles, opts)
                     if c >= max(ii, fastest)} | {max(ii, fastest)})
    for target in levels:
        lanes = [next(P for P in opts if s.cycles(P) <= target) if s.cycles(opts[-1]) <= target
                 else opts[-1] for s, opts in zip(specs, options)]
        mults, luts = _cost(specs, lanes)
        if (max_dsps is None or mults <= max_dsps) and (max_luts is None or luts <= max_luts):
            break
    else:
        raise SpecError(f"even one MAC lane per layer ({_cost(specs, [1] * len(specs))[0]} "
                        f"multipliers, ~{_cost(specs, [1] * len(specs))[1]} LUTs modelled) exceeds "
                        f"max_dsps={max_dsps} / max_luts={max_luts}; raise the budget")
    for s, P in zip(specs, lanes):
        s.lanes = P
    cycles = [s.cycles() for s in specs]
    # an engine loads its next input only after computing, so neighbours' compute times add up
    compute = [c - s.in_size for s, c in zip(specs, cycles)]
    ii_model = max([*cycles, *(a + b for a, b in zip(compute, compute[1:]))])
    why = (f"initiation interval target {max(ii, fastest)} cycles (requested {ii}, fastest "
           f"possible {fastest})")
    if max(cycles) > max(ii, fastest):
        why += f", relaxed to {max(cycles)} cycles to fit max_dsps={max_dsps}, max_luts={max_luts}"
    return Folding(lanes, cycles, ii_model, sum(cycles), mults, luts, why)


def reference(specs, raw_in: np.ndarray) -> np.ndarray:
    """Raw outputs [N, outputs] of the engine chain for raw inputs [N, in_size] (integers)."""
    out = []
    for row in np.asarray(raw_in, np.int64):
        for spec in specs:
            row = spec.reference(row)
        out.append(row)
    return np.array(out, dtype=np.int64)


def input_codes(network: Network, x: np.ndarray) -> np.ndarray:
    """Codes [N, in_size] of float inputs in the input quantizer's format (its rounding,
    saturating), channels-last: what the streaming top and the host protocol take."""
    first = network.layers[0]
    fmt = first.output.format
    x = np.asarray(x, np.float32).reshape(len(x), *network.input_shape[1:])
    if len(network.input_shape) == 4:  # NCHW as exported -> channels-last
        x = x.transpose(0, 2, 3, 1)
    q = first.requant
    return fmt.encode(x.reshape(len(x), -1).astype(np.float64) / first.output.scale,
                      rounding=q.rounding, saturate=q.saturate)


def output_values(network: Network, codes: np.ndarray) -> np.ndarray:
    """Float32 outputs [N, *output shape] of output codes, in the model's scale."""
    out = network.output
    values = np.asarray(out.format.decode(np.asarray(codes)), np.float32) * np.float32(out.scale)
    return values.reshape(len(codes), *out.shape[1:])
