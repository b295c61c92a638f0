"""Verification cases: an op on formats → the PE under test, its stimulus and the reference result.

Exhaustive where the input space is small, otherwise seeded random plus every corner class;
mismatches are described in the formats' own notation. `dot` (MX blocks), `mac` (streams of
dot products) and `simd` (the run-time switchable multiplier) are cases of their own
(sim/cases_mx.py, sim/cases_mac.py, sim/cases_simd.py) with this interface.
"""
import importlib
from dataclasses import dataclass

import numpy as np

from ..errors import SpecError
from .formats import dot, convert, parse_format

EXHAUSTIVE_LIMIT = 1 << 24  # vectors; ≤ 8-bit binary ops have 2**16
ARITY = {"mul": 2, "add": 2, "fma": 3, "convert": 1, "mac": 2, "dot": 1, "simd": 16}
SYMBOL = {"mul": "×", "add": "+"}

# (op, operand family) → "module:Class" of the PE; float PEs also take int/fixed operands.
PES = {
    ("mul", "float"): "float_pe:FloatMultiplier",
    ("add", "float"): "float_pe:FloatAdder",
    ("fma", "float"): "float_pe:FloatFMA",
    ("convert", "any"): "float_pe:Converter",
    ("mul", "posit"): "posit_pe:PositMultiplier",
    ("add", "posit"): "posit_pe:PositAdder",
    ("fma", "posit"): "posit_pe:PositFMA",
}


def _pe_class(op, family):
    key = (op, "any") if op == "convert" else (op, family)
    if key not in PES:
        ops = sorted({o for o, f in PES if f in (family, "any")})
        raise SpecError(f"no {op} PE for {family} formats; {family} supports: {', '.join(ops)}")
    module, name = PES[key].split(":")
    return getattr(importlib.import_module(f"forma.hdl.{module}"), name)


def corner_codes(fmt):
    """Codes of every corner class: zeros, ±1, ±max, ±min, NaN/NaR/inf, bit-pattern extremes,
    and each one's code neighbours (rounding and regime boundaries)."""
    top = (1 << fmt.bits) - 1
    half = 1 << (fmt.bits - 1)
    tiny = np.finfo(np.float64).tiny
    values = np.array([0.0, -0.0, 1.0, -1.0, 1.5, -1.5, np.inf, -np.inf, np.nan, 1e300, -1e300,
                       tiny, -tiny], dtype=np.float64)
    codes = set()
    for value in values:
        try:
            codes.add(int(fmt.encode(np.array([value]), saturate=True)[0]))
        except (ValueError, SpecError):
            pass  # not representable in this format (e.g. NaN in a finite format)
    patterns = {0, 1, 2, half - 2, half - 1, half, half + 1, half + 2, top - 1, top}
    candidates = {c + d for c in codes | patterns for d in (-1, 0, 1)}
    candidates = np.array(sorted(c for c in candidates if 0 <= c <= top), dtype=np.uint64)
    return candidates[fmt.valid_code_mask(candidates)]


def random_codes(fmt, count, rng):
    """`count` seeded random valid codes of `fmt`, drawn where rounding is hard. Each code
    independently: with probability 1/2 a random number of low bits is cleared (up to half the
    width), so results land on rounding ties and sticky-free halves far more often than uniform
    codes would; with probability 1/4 its magnitude bits (all but the top one) are shifted right
    by a random amount, so tiny values (subnormals, long posit regimes of zeros) appear with
    their leading one at every position, and with probability 1/8 the bits shifted in are ones
    instead, so huge values (top exponents, long regimes of ones) do too. Together they give
    sparse significands at the ends of the range, e.g. a subnormal power of two times a normal
    one, or a posit product whose regime is nearly the whole word."""
    drawn = rng.integers(0, 1 << fmt.bits, size=count, dtype=np.uint64)
    short, tiny, huge = (rng.random(count) < p for p in (0.5, 0.25, 0.125))
    cleared = rng.integers(0, fmt.bits // 2 + 1, size=count).astype(np.uint64)
    drawn[short] &= ~((np.uint64(1) << cleared[short]) - np.uint64(1))
    top = np.uint64(1) << np.uint64(fmt.bits - 1)
    shift = rng.integers(0, fmt.bits, size=count).astype(np.uint64)
    drawn[tiny] = (drawn[tiny] & top) | ((drawn[tiny] & (top - np.uint64(1))) >> shift[tiny])
    ones = (top - np.uint64(1)) & ~((top - np.uint64(1)) >> shift)
    drawn[huge] = (drawn[huge] & top) | ((drawn[huge] & (top - np.uint64(1))) >> shift[huge]) \
        | ones[huge]
    drawn[~fmt.valid_code_mask(drawn)] = 0  # the rare invalid pattern (none for most formats)
    return drawn


def scaled_significands(fa, fb, limit, rng):
    """(a, b) code pairs: every code of `fa` in [1, 2) or below its smallest normal (every
    significand, subnormals included) times every power of two of `fb`, signs drawn at random;
    a seeded sample of `limit` when there are more (formats over 16 bits: of a seeded pool).
    The products are exact significands moved to every exponent, so each shift into the
    subnormal range (or out of the top) meets every rounding pattern: e.g. bfloat16
    0x0018 × 2^-4 = 1.5 steps, a tie of the smallest subnormals."""
    def signed(fmt, keep):
        if fmt.bits <= 16:
            codes = fmt.all_codes().astype(np.uint64)
        else:                               # a seeded pool, with every power of two in range
            powers = fmt.encode(np.ldexp(1.0, np.arange(-1074, 1024)), saturate=True)
            codes = np.union1d(random_codes(fmt, 1 << 16, rng), powers).astype(np.uint64)
        values = fmt.decode(codes)
        pick = codes[keep(np.abs(values)) & (values > 0)]
        return pick, fmt.encode(-fmt.decode(pick))
    a, negative_a = signed(fa, lambda v: ((v >= 1) & (v < 2)) | (v < getattr(fa, "min_normal", 0)))
    b, negative_b = signed(fb, lambda v: np.isfinite(v) & (np.frexp(v)[0] == 0.5))
    rows, columns = (g.ravel() for g in np.meshgrid(np.arange(len(a)), np.arange(len(b)),
                                                     indexing="ij"))
    if len(rows) > limit:
        chosen = np.sort(rng.choice(len(rows), size=limit, replace=False))
        rows, columns = rows[chosen], columns[chosen]
    flip_a, flip_b = (rng.random(len(rows)) < 0.5 for _ in "ab")
    return (np.where(flip_a, negative_a[rows], a[rows]).astype(np.uint64),
            np.where(flip_b, negative_b[columns], b[columns]).astype(np.uint64))


@dataclass
class Case:
    """One op on formats: `formats` are the operands' (a, b[, c]) or (src,) for convert."""
    op: str
    formats: tuple
    out: object
    stages: int
    saturate: bool = False

    exhaustive_seeded = False   # True when an exhaustive run still draws from the seed
    default_lanes = 8           # PE copies the bulk checker runs side by side

    @classmethod
    def parse(cls, op, names, out=None, stages=1, saturate=False, carry_bits=None):
        if op not in ARITY:
            raise SpecError(f"unknown op '{op}'; ops: {', '.join(ARITY)}")
        if carry_bits is not None and op != "mac":
            raise SpecError(f"--carry-bits applies to the posit mac only, not {op}")
        if op in ("dot", "mac", "simd"):
            if saturate:
                raise SpecError(f"--saturate applies to convert only, not {op}")
            if op == "dot":
                from .cases_mx import DotCase
                return DotCase.parse(names, out, stages)
            if op == "simd":
                from .cases_simd import SimdCase
                return SimdCase.parse(names, out, stages)
            from .cases_mac import MacCase
            return MacCase.parse(names, out, stages, carry_bits)
        formats = tuple(parse_format(n) for n in names)
        if op == "convert":
            if len(formats) != 2:
                raise SpecError("convert takes two formats: SOURCE DESTINATION")
            return cls(op, formats[:1], formats[1], stages, saturate)
        if not 1 <= len(formats) <= ARITY[op]:
            raise SpecError(f"{op} takes 1 to {ARITY[op]} operand formats, got {len(formats)}")
        formats = formats + (formats[-1],) * (ARITY[op] - len(formats))
        return cls(op, formats, parse_format(out) if out else formats[0], stages, saturate)

    @property
    def names(self):
        return "abc"[:len(self.formats)]

    @property
    def title(self):
        args = " ".join(f.name for f in self.formats)
        return f"{self.op} {args}" + (f" -> {self.out.name}" if self.out != self.formats[0] or self.op == "convert" else "")

    def component(self):
        family = self.formats[0].family
        family = "float" if family in ("int", "fixed") else family
        cls = _pe_class(self.op, family)
        if self.op == "convert":
            return cls(self.formats[0], self.out, stages=self.stages, saturate=self.saturate or None)
        if family == "posit":
            if len(set(self.formats)) > 1 or self.out != self.formats[0]:
                raise SpecError(f"posit {self.op} takes one format for operands and result")
            return cls(self.formats[0], stages=self.stages)
        return cls(*self.formats, out_fmt=self.out, stages=self.stages)

    @property
    def space(self):
        """Number of distinct input vectors."""
        return int(np.prod([float(1 << f.bits) for f in self.formats]))

    def exhaustive(self, seed=None):
        """Every combination of valid codes, a varying fastest (the seed is not used)."""
        axes = [f.all_codes() for f in self.formats]
        grids = np.meshgrid(*axes[::-1], indexing="ij")
        return [g.ravel() for g in grids[::-1]]

    def random(self, count, seed):
        """Corner-class cross products first; for mul, scaled_significands in up to a quarter
        of the vectors; then random valid codes (seeded, random_codes)."""
        rng = np.random.default_rng(seed)
        corners = [corner_codes(f) for f in self.formats]
        grids = np.meshgrid(*corners, indexing="ij")
        operands = [g.ravel()[:count] for g in grids]
        if self.op == "mul":
            scaled = scaled_significands(*self.formats, count // 4, rng)
            operands = [np.concatenate([o, s])[:count] for o, s in zip(operands, scaled)]
        rest = max(count - len(operands[0]), 0)
        for index, fmt in enumerate(self.formats):
            drawn = random_codes(fmt, rest, rng)
            operands[index] = np.concatenate([operands[index], drawn]).astype(np.uint64)
        return operands

    def reference(self, operands):
        """The reference's result codes for these operands (one exact rounding)."""
        a = operands[0]
        if self.op == "convert":
            return self._convert(a)
        same = len(set(self.formats)) == 1 and self.out == self.formats[0]
        if self.op == "mul" and not same:
            return dot(a[:, None], operands[1][:, None], *self.formats, self.out)
        if not same:
            raise SpecError(f"{self.op} with mixed formats has no reference rule yet; "
                            f"use one format for operands and result")
        return getattr(self.formats[0], self.op)(*operands)

    def _convert(self, codes):
        """convert(), except that a NaN or infinity the destination cannot encode (e.g. NaN to
        int8) gives code 0: the converter hardware's documented rule where the reference raises."""
        src, saturate = self.formats[0], self.saturate or None
        special = ~np.isfinite(src.decode(codes))
        out = np.zeros(len(codes), dtype=np.uint64)
        out[~special] = convert(codes[~special], src, self.out, saturate=saturate)
        for index in np.flatnonzero(special):
            try:
                out[index] = convert(codes[index:index + 1], src, self.out, saturate=saturate)[0]
            except ValueError:
                out[index] = 0
        return out

    def streams(self, operands):
        """How the bulk checker must keep vectors together (None: every vector stands alone)."""
        return None

    def pack(self, operands):
        """Packed input payloads: a in the low bits, then b, then c."""
        packed, shift = np.zeros(len(operands[0]), dtype=np.uint64), 0
        for codes, fmt in zip(operands, self.formats):
            packed |= np.asarray(codes, dtype=np.uint64) << np.uint64(shift)
            shift += fmt.bits
        return packed, shift

    def describe(self, operands, index, got, expected):
        """`posit(8,0) 0x41 × 0x7e → got 0x7f, expected 0x7e` with the decoded values."""
        def show(fmt, code):
            digits = (fmt.bits + 3) // 4
            value = fmt.decode(np.array([code], dtype=np.uint64))[0]
            return f"0x{int(code):0{digits}x} ({value:g})"
        args = [show(f, operands[k][index]) for k, f in enumerate(self.formats)]
        if self.op == "fma":
            text = f"{args[0]} × {args[1]} + {args[2]}"
        elif self.op == "convert":
            text = f"{args[0]} → {self.out.name}"
        else:
            text = f" {SYMBOL[self.op]} ".join(args)
        names = self.formats[0].name if len(set(self.formats)) == 1 else "/".join(f.name for f in self.formats)
        return f"{names} {text} → got {show(self.out, got)}, expected {show(self.out, expected)}"
