"""`forma verify mac`: the exact-accumulator MACs (Kulisch FloatMAC for float/int/fixed operands,
the posit quire MAC) as a verification case: streams of dot products, every beat's result checked.

Each beat's output is the exact sum of its stream's products so far, rounded once: the reference
is `dot(..., accumulate="exact")` of that prefix (posits: the quire). An exhaustive run holds every
(a, b) code pair once as a product, in seeded order, cut into streams of 1..STREAM_MAX beats
(log-uniform, seeded) after the corner streams: ACCUMULATION_BOUND-long runs of the largest
products, of alternating-sign ones and of the smallest ones, and short streams of specials.
"""
from fractions import Fraction

import numpy as np

from ..errors import SpecError
from .bulk import Streams, pack_fields
from .formats import dot, parse_format
from .formats.posit import QUIRE_CARRY_BITS

STREAM_MAX = 64             # streams are 1..STREAM_MAX beats (log-uniform)
ACCUMULATION_BOUND = 1024   # the longest stream the MAC sums exactly (FloatMAC `length`)


def stream_lengths(total, rng):
    """Seeded log-uniform stream lengths in 1..STREAM_MAX summing to `total`."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.exp(rng.uniform(0, np.log(STREAM_MAX + 1), total)).astype(np.int64)
    lengths = np.clip(lengths, 1, STREAM_MAX)
    ends = np.cumsum(lengths)
    lengths = lengths[:np.searchsorted(ends, total) + 1]
    lengths[-1] -= int(lengths.sum()) - total
    return lengths[lengths > 0]


def last_flags(lengths):
    last = np.zeros(int(np.sum(lengths)), dtype=np.uint64)
    last[np.cumsum(lengths) - 1] = 1
    return last


class MacCase:
    """`mac A [B] [--out OUT]`: a MAC streaming its rounded running sum after every beat.
    Operands are (a, b, last) code arrays, one entry per beat."""

    op = "mac"
    exhaustive_seeded = True    # the pair order and the stream cuts come from the seed
    default_lanes = 8

    def __init__(self, formats, out, stages, carry_bits=None):
        self.formats, self.out, self.stages = formats, out, stages
        self.posit = formats[0].family == "posit"
        self.carry_bits = carry_bits

    @classmethod
    def parse(cls, names, out=None, stages=1, carry_bits=None):
        if not 1 <= len(names) <= 2:
            raise SpecError(f"mac takes 1 or 2 operand formats (A [B]), got {len(names)}")
        formats = tuple(parse_format(n) for n in names)
        formats = formats + (formats[-1],) * (2 - len(formats))
        if not out and formats[0].family not in ("float", "posit"):
            raise SpecError(f"mac {formats[0].name}: the MAC rounds its exact sum to a float "
                            f"format; name it with --out (e.g. --out float16)")
        out = parse_format(out) if out else formats[0]
        families = {f.family for f in formats + (out,)}
        if "posit" in families and (len(set(formats + (out,))) > 1):
            raise SpecError("posit mac takes one format for operands and result")
        if families & {"mx"}:
            raise SpecError("mac takes float, integer, fixed-point or posit formats; "
                            "MX blocks use `forma verify dot`")
        if "posit" not in families:
            if carry_bits is not None:
                raise SpecError(f"--carry-bits {carry_bits}: only the posit mac has a quire; "
                                f"{formats[0].name} sums in an exact accumulator sized for its bound")
        elif carry_bits is None:
            carry_bits = QUIRE_CARRY_BITS
        elif isinstance(carry_bits, bool) or not isinstance(carry_bits, int) or carry_bits < 0:
            raise SpecError(f"--carry-bits {carry_bits}: give the quire's carry bits as an "
                            f"integer >= 0 (default {QUIRE_CARRY_BITS})")
        return cls(formats, out, stages, carry_bits)

    @property
    def title(self):
        args = " ".join(f.name for f in self.formats)
        quire = "" if self.carry_bits in (None, QUIRE_CARRY_BITS) else \
            f" (quire carry bits {self.carry_bits})"
        return f"mac {args} -> {self.out.name}{quire}"

    @property
    def space(self):
        return (1 << self.formats[0].bits) * (1 << self.formats[1].bits)

    def component(self):
        if self.posit:
            from ..hdl.posit_pe import PositQuireMAC
            return PositQuireMAC(self.formats[0], stages=self.stages, carry_bits=self.carry_bits)
        from ..hdl.float_mac import FloatMAC
        return FloatMAC(*self.formats, self.out, length=ACCUMULATION_BOUND, stages=self.stages,
                        emit="every")

    # --- stimulus -----------------------------------------------------------------------------
    def _extreme(self, fmt, largest):
        codes = fmt.all_codes()
        values = fmt.decode(codes)
        ok = np.isfinite(values) & (values > 0)
        pick = np.argmax if largest else np.argmin
        return int(codes[ok][pick(values[ok])])

    def corner_streams(self):
        """[(a, b)] streams: bound-long runs of the largest, alternating and smallest products,
        then short streams of NaN/inf/signed-zero products where the formats have them."""
        fa, fb = self.formats
        top_a, top_b = self._extreme(fa, True), self._extreme(fb, True)
        low_a, low_b = self._extreme(fa, False), self._extreme(fb, False)
        neg_a = exact_codes(fa, [-fa.decode(np.array([top_a], dtype=np.uint64))[0]])
        n = ACCUMULATION_BOUND
        streams = [([top_a] * n, [top_b] * n), ([low_a] * n, [low_b] * n)]
        if neg_a:
            streams.append(([top_a, neg_a[0]] * (n // 2), [top_b] * n))
            streams.append(([neg_a[0]] * n, [top_b] * n))
        one_b = exact_codes(fb, [1.0])
        for values in ([np.inf], [-np.inf], [np.nan], [np.inf, -np.inf], [0.0, np.inf],
                       [-0.0], [-0.0, -0.0], [-0.0, 0.0], [1.0, -1.0]):
            a = exact_codes(fa, values)
            if len(a) == len(values) and one_b:
                streams.append((a, one_b * len(a)))
        return streams + self.bit_streams()

    def bit_streams(self):
        """[(a, b)] streams whose exact sums are +-2**k and +-(2**k - 1) accumulator units for
        every accumulator bit k (at most ACCUMULATION_BOUND products): each bit alone, and every
        run of low ones, is seen by the zero test, the normalization and the rounding; then
        +-tie_targets (at most STREAM_MAX products), so every bit below each rounding position
        is seen alone deciding a tie. A posit quire of w bits reaches its limits so,
        +-(2**(w-1) - 1), and one unit beyond (NaR from there on) where that few products get
        there (not with the default 30 carry bits)."""
        fa, fb = self.formats
        if self.posit:
            unit = Fraction(2) ** -fa.quire_frac_bits
            products = power_products(fa, unit)
            bits = fa.quire_width(self.carry_bits)
        else:
            from ..hdl.float_mac import lsb_exponent
            unit = Fraction(2) ** (lsb_exponent(fa) + lsb_exponent(fb))
            products = unit_products(fa, fb, unit)
            bits = (ACCUMULATION_BOUND * max(products, default=0)).bit_length()
        return (signed_sums(fa, products, bit_targets(bits), ACCUMULATION_BOUND)
                + signed_sums(fa, products, tie_targets(self.out, unit, bits), STREAM_MAX))

    def _assemble(self, streams, a, b, rng):
        """Operands of the corner streams followed by (a, b) cut into seeded streams."""
        lengths = [len(s[0]) for s in streams] + list(stream_lengths(len(a), rng))
        ca = np.concatenate([np.array(s[0], dtype=np.uint64) for s in streams] + [a])
        cb = np.concatenate([np.array(s[1], dtype=np.uint64) for s in streams] + [b])
        return ca, cb, last_flags(lengths)

    def exhaustive(self, seed=1):
        rng = np.random.default_rng(seed)
        axes = [f.all_codes().astype(np.uint64) for f in self.formats]
        a, b = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))
        order = rng.permutation(len(a))
        return self._assemble(self.corner_streams(), a[order], b[order], rng)

    def random(self, count, seed):
        rng = np.random.default_rng(seed)
        corners = self.corner_streams()
        rest = max(count - sum(len(s[0]) for s in corners), 0)
        drawn = []
        for fmt in self.formats:
            codes = rng.integers(0, 1 << fmt.bits, size=rest, dtype=np.uint64)
            codes[~fmt.valid_code_mask(codes)] = 0
            drawn.append(codes)
        a, b, last = (x[:count] for x in self._assemble(corners, *drawn, rng))
        last[-1:] = 1                 # a stream cut by `count` still ends
        return a, b, last

    # --- reference and payloads ---------------------------------------------------------------
    @staticmethod
    def _stream_starts(last):
        """Index of the first beat of each beat's stream."""
        begins = np.concatenate([[True], np.asarray(last[:-1]) == 1])
        return np.maximum.accumulate(np.where(begins, np.arange(len(last)), 0))

    def reference(self, operands):
        """Each beat: dot(exact) of its stream's products so far, rounded once to out (posits:
        the quire of PositFormat.quire_dot with the case's carry bits)."""
        a, b, last = operands
        fa, fb = self.formats
        start = self._stream_starts(last)
        offset = np.arange(len(a)) - start
        want = np.zeros(len(a), dtype=np.uint64)
        for k in range(int(offset.max(initial=-1)) + 1):
            rows = np.flatnonzero(offset == k)
            index = start[rows][:, None] + np.arange(k + 1)
            want[rows] = (fa.quire_dot(a[index], b[index], self.carry_bits) if self.posit else
                          dot(a[index], b[index], fa, fb, self.out, accumulate="exact"))
        return want

    def fields(self, operands):
        a, b, last = operands
        fa, fb = self.formats
        return [(a, fa.bits), (b, fb.bits), (last, 1)]

    def pack(self, operands):
        return pack_fields(self.fields(operands))

    def streams(self, operands):
        """Streams stay whole on a lane; lanes are evened out with one-beat 0 × 0 streams."""
        zero = tuple(np.array(exact_codes(f, [0.0])[:1] or [0], dtype=np.uint64) for f in self.formats)
        pad_operands = (*zero, np.ones(1, dtype=np.uint64))
        pad, _ = self.pack(pad_operands)
        last = operands[2]
        starts = np.concatenate([[True], np.asarray(last[:-1]) == 1])
        return Streams(starts, pad[0], int(self.reference(pad_operands)[0]))

    def describe(self, operands, index, got, expected):
        """`float8_e4m3fn mac, beat 3 of the stream at vector 120: 0x38 (1) × 0x40 (2) + … → got …`."""
        a, b, last = operands
        begin = int(self._stream_starts(last)[index])

        def show(fmt, code):
            value = fmt.decode(np.array([code], dtype=np.uint64))[0]
            return f"0x{int(code):0{(fmt.bits + 3) // 4}x} ({value:g})"
        fa, fb = self.formats
        terms = [f"{show(fa, a[i])} × {show(fb, b[i])}" for i in range(begin, index + 1)]
        if len(terms) > 4:
            terms = terms[:2] + [f"… ({len(terms) - 3} more)"] + terms[-1:]
        names = fa.name if fa == fb else f"{fa.name}/{fb.name}"
        return (f"{names} mac, beat {index - begin + 1} of the stream at vector {begin}: "
                f"{' + '.join(terms)} → got {show(self.out, got)}, expected {show(self.out, expected)}")


def exact_codes(fmt, values):
    """Codes of `values` that `fmt` holds exactly (others dropped)."""
    codes = []
    for value in values:
        try:
            code = fmt.encode(np.array([value]))
        except (ValueError, SpecError):
            continue
        back = fmt.decode(code)[0]
        if back == value or (np.isnan(back) and np.isnan(value)):
            codes.append(int(code[0]))
    return codes


def unit_products(fa, fb, unit):
    """{product in `unit`s: (a code, b code)} over the positive finite codes of `fa` and `fb`
    whose product is a whole number of units (the first pair found for each product)."""

    def positive(fmt):
        codes = fmt.all_codes()
        values = fmt.decode(codes)
        keep = np.isfinite(values) & (values > 0)
        return [(int(c), Fraction(float(v))) for c, v in zip(codes[keep], values[keep])]
    products = {}
    for ca, va in positive(fa):
        for cb, vb in positive(fb):
            units = va * vb / unit
            if units.denominator == 1:
                products.setdefault(int(units), (ca, cb))
    return products


def power_products(fmt, unit):
    """{product in `unit`s: (a code, b code)} over the products of two powers of two of `fmt`
    (every power of two from the smallest product to the largest, for posits)."""
    scales = np.arange(fmt.min_scale, fmt.max_scale + 1)
    codes = [int(c) for c in fmt.encode(np.ldexp(1.0, scales))]
    products = {}
    for ca, sa in zip(codes, scales):
        for cb, sb in zip(codes, scales):
            products.setdefault(int(Fraction(2) ** int(sa + sb) / unit), (ca, cb))
    return products


def bit_targets(bits):
    """2**k and 2**k - 1 for every k < bits: each bit alone and every run of low ones."""
    return [t for k in range(bits) for t in (1 << k, (1 << k) - 1) if t]


def tie_targets(out, unit, bits):
    """Sums in `unit`s that `out` rounds on a tie, for every bit k < bits: 2**k + h (even: down),
    2**k + 3h (odd: up) and 2**k + h + 2**j for every 2**j < h (one lower bit alone breaks the
    tie), h being half the step of `out` above 2**k units where that is a whole number of units."""
    targets = []
    for k in range(bits):
        value = Fraction(1 << k) * unit
        try:
            code = out.encode(np.array([float(value)]))
            here, above = out.decode(np.concatenate([code, code + 1]))
        except (ValueError, SpecError, OverflowError):
            continue
        if not (np.isfinite([here, above]).all() and Fraction(float(here)) == value
                and above > here):
            continue
        half = (Fraction(float(above)) - value) / 2 / unit
        if half.denominator == 1 and half >= 1:
            h = int(half)
            targets += [(1 << k) + h, (1 << k) + 3 * h]
            targets += [(1 << k) + h + (1 << j) for j in range(h.bit_length() - 1)]
    return targets


def negations(fa, codes):
    """{code: the code of its negation} over `codes` of `fa` whose negation `fa` holds exactly."""
    return {code: minus[0] for code in codes
            if (minus := exact_codes(fa, [-fa.decode(np.array([code], dtype=np.uint64))[0]]))}


def greedy_pairs(products, sizes, target, limit):
    """[(a, b)]: at most `limit` pairs from `products` ({units: (a, b)}, `sizes` its sorted
    keys) summing to exactly `target` units, the largest that fit first; None if that misses."""
    pairs, rest = [], target
    while sizes and rest >= sizes[0] and len(pairs) < limit:
        size = sizes[int(np.searchsorted(sizes, rest, side="right")) - 1]
        pairs.append(products[size])
        rest -= size
    return pairs if pairs and not rest else None


def signed_sums(fa, products, targets, limit):
    """[(a codes, b codes)] lists of at most `limit` pairs from `products` ({units: (a, b)})
    summing to exactly each of `targets` (units), and (a negated) to minus each: greedy sums of
    the largest products that fit (greedy_pairs); skipped where they cannot hit it."""
    sizes = sorted(products)
    negate = negations(fa, {a for a, _ in products.values()})
    lists = []
    for target in targets:
        pairs = greedy_pairs(products, sizes, target, limit)
        if pairs is None:
            continue
        lists.append(([a for a, _ in pairs], [b for _, b in pairs]))
        if all(a in negate for a, _ in pairs):
            lists.append(([negate[a] for a, _ in pairs], [b for _, b in pairs]))
    return lists
