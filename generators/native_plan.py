"""Layer list -> dataflow engine specs for the native backend, folding and an integer reference.

Dense/conv layers become MAC engines, pools max/sum engines, transposes copy engines, residual adds
add engines; relu and quant layers fuse into the preceding engine's epilogue (a minifloat quant as
an exact encoder). Anything else is refused with the node named.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import unsigned

from forma.errors import SpecError
from forma.hdl.dataflow import RELU, BipolarSign, EngineSpec, MinifloatRequantize, Requantize
from forma.hdl.mac import int_shape
from forma.sim.formats import FixedFormat, FloatFormat

from .qonnx_import import Network, exact_fixed

#: layer kinds the native backend maps
NATIVE_KINDS = ("quant", "dense", "conv2d", "relu", "maxpool2d", "shift", "reshape", "add",
                "global_avgpool", "transpose")
#: layer kinds that may read a stream of minifloat codes (they decode or only reorder it)
READS_MINIFLOAT = ("dense", "conv2d", "add", "global_avgpool", "reshape", "transpose")
#: resource model per MAC lane (one multiplier each): LUT4s per product bit and per accumulator bit
LUTS_PER_PRODUCT_BIT, LUTS_PER_ACC_BIT, LUTS_PER_ENGINE = 1, 2, 60
#: widest accumulator a minifloat requantizer takes (its reference rounds through float64)
MINIFLOAT_ACC_BITS = 53


def unsupported(network: Network) -> list[str]:
    """Why the native backend cannot map this network (empty: it can), one sentence naming the
    node; the same checks `plan` makes, without building anything."""
    try:
        plan(network)
    except SpecError as error:
        return [str(error)]
    return []


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


def stream_shape(fmt):
    """Payload shape of a stream of `fmt` values: the raw integer (fixed) or the code (float)."""
    return int_shape(fmt) if isinstance(fmt, FixedFormat) else unsigned(fmt.bits)


def _mac_spec(layer, x, shape, weight_km, gather):
    acc = layer.output.format
    fx, fw = exact_fixed(x.format), exact_fixed(layer.weight_format)
    shift = acc.frac_bits - fx.frac_bits - fw.frac_bits
    w = raw_values(layer.weight_format, weight_km) << shift
    bias = None
    if layer.bias is not None:
        fb = exact_fixed(layer.bias_format)
        bias = raw_values(layer.bias_format, layer.bias) << (acc.frac_bits - fb.frac_bits)
    return EngineSpec("mac", layer.name, shape, int(np.prod(x.shape[1:])), None, gather=gather,
                      weight=w, bias=bias, decode=_code_table(x.format))


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


def _channel_gather(shape, channels_last):
    """[channels, positions] addresses of every position of each channel (NHWC or NCHW)."""
    if not channels_last:
        c, positions = shape[1], int(np.prod(shape[2:]))
        return (np.arange(c)[:, None] * positions + np.arange(positions)[None, :]).astype(np.int64)
    c, positions = shape[-1], int(np.prod(shape[1:-1]))
    return (np.arange(positions)[None, :] * c + np.arange(c)[:, None]).astype(np.int64)


class _Planner:
    """Walks the layer list keeping the streams: tensor name -> (engine index, payload shape);
    engine -1 is the network input. Ops that fuse into an engine's epilogue rename its stream."""

    def __init__(self, network):
        first = network.layers[0]
        if first.kind != "quant" or first.inputs != (None,):
            raise SpecError(f"node {first.label}: the network must start with a quantizer of "
                            "the graph input")
        self.specs = []
        self.x = first.output
        self.streams = {self.x.name: (-1, stream_shape(self.x.format))}
        self.readers = {}
        for layer in network.layers:
            for t in layer.inputs:
                if t is not None:
                    self.readers[t.name] = self.readers.get(t.name, 0) + 1

    def current(self, layer):
        src = layer.inputs[0]
        if src is None or src.name != self.x.name:
            name = None if src is None else src.name
            raise SpecError(f"node {layer.label}: reads '{name}', not the previous layer's "
                            "output; the native backend maps chains of layers (plus residual "
                            "adds)")
        if isinstance(src.format, FloatFormat) and layer.kind not in READS_MINIFLOAT:
            raise SpecError(f"node {layer.label}: a {layer.kind} of minifloat "
                            f"({src.format.name}) values is not supported by the native "
                            f"backend; only {', '.join(READS_MINIFLOAT)} layers read them")
        return self.streams[src.name]

    def engine(self, spec, source, layer, out_shape=None):
        spec.source = source
        spec.out_shape = out_shape if out_shape is not None else spec.acc_shape()
        self.specs.append(spec)
        self.x = layer.output
        self.streams[self.x.name] = (len(self.specs) - 1, spec.out_shape)

    def fuse(self, layer, op, out_shape=None):
        """Append `op` to the epilogue of the engine producing the current stream."""
        index, shape = self.streams[self.x.name]
        if index < 0 or index != len(self.specs) - 1:
            raise SpecError(f"node {layer.label}: a {layer.kind} before the first dense, conv, "
                            "pool or add layer is not supported by the native backend")
        spec = self.specs[index]
        spec.epilogue.append(op)
        if out_shape is not None:
            spec.out_shape = out_shape
        del self.streams[self.x.name]  # the value before the op is no longer a stream
        self.x = layer.output
        self.streams[self.x.name] = (index, spec.out_shape)

    def rename(self, layer):
        self.streams[layer.output.name] = self.streams[self.x.name]
        if self.readers.get(self.x.name) == 1:
            del self.streams[self.x.name]
        self.x = layer.output

    def gathered(self, source, shape, gather):
        """(source, shape, gather) reading through a preceding transpose (copy engine) when the
        transposed stream has no other reader: the copy engine disappears into the gather."""
        if source < 0 or source != len(self.specs) - 1:
            return source, shape, gather
        copy = self.specs[source]
        names = [n for n, (index, _) in self.streams.items() if index == source]
        if copy.kind != "copy" or copy.epilogue or names != [self.x.name] or \
                self.readers.get(self.x.name) != 1:
            return source, shape, gather
        self.specs.pop()
        del self.streams[self.x.name]
        if gather is None:
            gather = np.arange(copy.outputs, dtype=np.int64)[None]
        composed = np.where(gather >= 0, copy.gather[np.maximum(gather, 0), 0], -1)
        return copy.source, copy.in_shape, composed

    def layer(self, layer):
        x = self.x
        if layer.kind == "add":
            return self.add(layer)
        source, shape = self.current(layer)
        size = int(np.prod(x.shape[1:]))
        if layer.kind == "dense":
            source, shape, gather = self.gathered(source, shape, None)
            self.engine(_mac_spec(layer, x, shape, layer.weight, gather), source, layer)
        elif layer.kind == "conv2d":
            w = layer.weight  # [out, kh, kw, in] -> [kh*kw*in, out]
            source, shape, gather = self.gathered(source, shape, _window_gather(
                x.shape, layer.output.shape, layer.attrs["kernel_shape"], layer.attrs["strides"],
                layer.attrs["pads"], False))
            self.engine(_mac_spec(layer, x, shape, w.reshape(w.shape[0], -1).T, gather), source,
                        layer)
        elif layer.kind == "maxpool2d":
            source, shape, gather = self.gathered(source, shape, _window_gather(
                x.shape, layer.output.shape, layer.attrs["kernel_shape"], layer.attrs["strides"],
                layer.attrs["pads"], True))
            self.engine(EngineSpec("max", layer.name, shape, size, None, gather=gather), source,
                        layer, shape)
        elif layer.kind == "global_avgpool":
            source, shape, gather = self.gathered(
                source, shape, _channel_gather(x.shape, layer.attrs["channels_last"]))
            self.engine(EngineSpec("sum", layer.name, shape, size, None, gather=gather,
                                   decode=_code_table(x.format)), source, layer)
        elif layer.kind == "transpose":
            order = np.arange(size).reshape(x.shape)
            source, shape, gather = self.gathered(
                source, shape, order.transpose(layer.attrs["perm"]).reshape(-1, 1))
            self.engine(EngineSpec("copy", layer.name, shape, size, None, gather=gather), source,
                        layer, shape)
        elif layer.kind == "relu":
            self.fuse(layer, RELU)
        elif layer.kind == "quant":
            self.quant(layer)
        elif layer.kind in ("reshape", "shift"):
            self.rename(layer)  # same raw values in the same order; only the format's LSB moves
        else:
            raise SpecError(f"node {layer.label}: {layer.kind} layers are not supported by the "
                            f"native backend (it maps {', '.join(NATIVE_KINDS)})")

    def quant(self, layer):
        q, fmt = layer.requant, layer.output.format
        if q.kind == "bipolar":
            self.fuse(layer, BipolarSign(), int_shape(fmt))
            return
        if q.kind != "minifloat":
            low = fmt.raw_min if q.low is None else q.low
            self.fuse(layer, Requantize(q.shift, q.multiplier, q.rounding, low, fmt.raw_max,
                                        q.saturate, q.offset), int_shape(fmt))
            return
        src = exact_fixed(self.x.format)
        _, shape = self.streams[self.x.name]
        if q.rounding != "rne":
            raise SpecError(f"node {layer.label}: minifloat requantization rounds to nearest "
                            f"even in hardware, not '{q.rounding}'; use rounding_mode ROUND")
        if shape.width > MINIFLOAT_ACC_BITS:
            raise SpecError(f"node {layer.label}: a {shape.width}-bit value into a minifloat "
                            f"requantizer exceeds {MINIFLOAT_ACC_BITS} bits; use narrower "
                            "formats")
        if not q.saturate:
            lo, hi = _value_range(shape, src.frac_bits)
            if max(-lo, hi) > fmt.max_value:
                raise SpecError(f"node {layer.label}: non-saturating FloatQuant of values up "
                                f"to {max(-lo, hi):g} > max {fmt.max_value:g} gives NaN/inf, "
                                "which the native backend does not carry; use saturation=1")
        self.fuse(layer, MinifloatRequantize(fmt, src.frac_bits, q.saturate),
                  unsigned(fmt.bits))

    def add(self, layer):
        names = [t.name for t in layer.inputs]
        if self.x.name not in names:
            raise SpecError(f"node {layer.label}: reads {names}, neither is the previous "
                            "layer's output; the native backend maps residual adds onto a chain")
        main = layer.inputs[names.index(self.x.name)]
        other = layer.inputs[1 - names.index(self.x.name)]
        if other.name not in self.streams:
            raise SpecError(f"node {layer.label}: its second input '{other.name}' is not the "
                            "output of an engine or of the input quantizer (it was fused into a "
                            "relu/quantizer that follows); take the skip from that later tensor")
        if main.shape != other.shape:
            raise SpecError(f"node {layer.label}: adds shapes {main.shape} and {other.shape}; "
                            "the native backend adds equal shapes only (no broadcasting)")
        source, shape = self.streams[main.name]
        skip, skip_shape = self.streams[other.name]
        if skip == source:
            raise SpecError(f"node {layer.label}: adds '{main.name}' to itself; use a Mul by 2")
        frac = exact_fixed(layer.output.format).frac_bits
        size = int(np.prod(main.shape[1:]))
        between = len(self.specs) - 1 - skip  # engines on the main branch, holding <= 2 rows each
        spec = EngineSpec("add", layer.name, shape, size, None, decode=_code_table(main.format),
                          skip=skip, skip_shape=skip_shape, skip_decode=_code_table(other.format),
                          skip_depth=(2 * between + 2) * size,
                          align=(frac - exact_fixed(main.format).frac_bits,
                                 frac - exact_fixed(other.format).frac_bits))
        self.engine(spec, source, layer)


def _value_range(shape, frac):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    return lo * 2.0 ** -frac, hi * 2.0 ** -frac


def plan(network: Network) -> list[EngineSpec]:
    """The engine specs of `network` (lanes 1; see `fold`). SpecError naming the node for
    anything the native backend cannot map exactly."""
    planner = _Planner(network)
    for layer in network.layers[1:]:
        planner.layer(layer)
    if not planner.specs:
        raise SpecError("the network has no dense, conv, pool or add layer to map onto engines")
    if planner.streams.get(network.output.name, (None,))[0] != len(planner.specs) - 1:
        raise SpecError(f"the graph output '{network.output.name}' is not the last engine's "
                        "output; the native backend maps chains ending in the output")
    return planner.specs


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
    per engine that reach it. Sets `spec.lanes`; SpecError if even one lane each does not fit.

    Engines overlap (double-buffered inputs): the interval is the slowest engine's
    `interval()`, the latency the sum of the engines' `cycles()`.
    """
    if not isinstance(ii, int) or isinstance(ii, bool) or ii < 1:
        raise SpecError(f"initiation interval {ii!r}: give a number of cycles >= 1")
    options = [lane_options(s) for s in specs]
    fastest = max(s.interval(opts[-1]) for s, opts in zip(specs, options))
    levels = sorted({c for s, opts in zip(specs, options) for c in map(s.interval, opts)
                     if c >= max(ii, fastest)} | {max(ii, fastest)})
    for target in levels:
        lanes = [next(P for P in opts if s.interval(P) <= target) for s, opts in zip(specs, options)]
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
    ii_model = max(s.interval() for s in specs)
    why = (f"initiation interval target {max(ii, fastest)} cycles (requested {ii}, fastest "
           f"possible {fastest})")
    if ii_model > max(ii, fastest):
        why += f", relaxed to {ii_model} cycles to fit max_dsps={max_dsps}, max_luts={max_luts}"
    return Folding(lanes, cycles, ii_model, sum(cycles), mults, luts, why)


def reference(specs, stream_in: np.ndarray) -> np.ndarray:
    """Output stream values [N, outputs] of the engines for input stream values [N, in_size]
    (raw integers of fixed formats, codes of minifloats), following sources and skips."""
    out = []
    for row in np.asarray(stream_in, np.int64):
        streams = {-1: row}
        for n, spec in enumerate(specs):
            skip = streams[spec.skip] if spec.skip is not None else None
            streams[n] = spec.reference(streams[spec.source], skip)
        out.append(streams[len(specs) - 1])
    return np.array(out, dtype=np.int64)


def to_stream(fmt, codes) -> np.ndarray:
    """Stream values of `fmt` codes: raw integers (fixed) or the codes themselves (float)."""
    codes = np.asarray(codes)
    return fmt.to_raw(codes).astype(np.int64) if isinstance(fmt, FixedFormat) else \
        codes.astype(np.int64)


def from_stream(fmt, values) -> np.ndarray:
    """Codes of `fmt` from stream values (the inverse of `to_stream`)."""
    return fmt.from_raw(np.asarray(values)) if isinstance(fmt, FixedFormat) else \
        np.asarray(values).astype(fmt.code_dtype)


def reference_outputs(network: Network, specs, x: np.ndarray) -> np.ndarray:
    """Float32 outputs of the engines' integer reference for float inputs x (as `forma run`)."""
    stream = to_stream(network.layers[0].output.format, input_codes(network, x))
    out = reference(specs, stream)
    return output_values(network, from_stream(network.output.format, out))


def input_codes(network: Network, x: np.ndarray) -> np.ndarray:
    """Codes [N, in_size] of float inputs in the input quantizer's format (its rounding,
    saturating), channels-last: what the streaming top and the host protocol take."""
    first = network.layers[0]
    fmt = first.output.format
    x = np.asarray(x, np.float32).reshape(len(x), *network.input_shape[1:])
    if network.input_perm is not None:  # e.g. NCHW as exported -> channels-last
        x = x.transpose(network.input_perm)
    q = first.requant
    if q.kind == "bipolar":  # QONNX: +1 where x >= 0 (NaN gives -1)
        return fmt.from_raw(np.where(x.reshape(len(x), -1) >= 0, 1, -1))
    if q.kind == "minifloat":
        return fmt.encode(x.reshape(len(x), -1).astype(np.float64), rounding=q.rounding,
                          saturate=q.saturate)
    codes = fmt.encode(x.reshape(len(x), -1).astype(np.float64) / first.output.scale,
                       rounding=q.rounding, saturate=q.saturate)
    if q.low is None:
        return codes
    return fmt.from_raw(np.maximum(fmt.to_raw(codes), q.low))  # QONNX's narrow signed range


def output_values(network: Network, codes: np.ndarray) -> np.ndarray:
    """Float32 outputs [N, *output shape] of output codes, in the model's scale."""
    out = network.output
    values = np.asarray(out.format.decode(np.asarray(codes)), np.float32) * np.float32(out.scale)
    return values.reshape(len(codes), *out.shape[1:])
