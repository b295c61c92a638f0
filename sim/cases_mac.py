"""`forma verify mac`: the exact-accumulator MACs (Kulisch FloatMAC for float/int/fixed operands,
the posit quire MAC) as a verification case: streams of dot products, every beat's result checked.

Each beat's output is the exact sum of its stream's products so far, rounded once: the reference
is `dot(..., accumulate="exact")` of that prefix (posits: the quire). An exhaustive run holds every
(a, b) code pair once as a product, in seeded order, cut into streams of 1..STREAM_MAX beats
(log-uniform, seeded) after the corner streams: ACCUMULATION_BOUND-long runs of the largest
products, of alternating-sign ones and of the smallest ones, and short streams of specials.
"""
import numpy as np

from ..errors import SpecError
from .bulk import Streams, pack_fields
from .formats import dot, parse_format

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

    def __init__(self, formats, out, stages):
        self.formats, self.out, self.stages = formats, out, stages
        self.posit = formats[0].family == "posit"

    @classmethod
    def parse(cls, names, out=None, stages=1):
        if not 1 <= len(names) <= 2:
            raise SpecError(f"mac takes 1 or 2 operand formats (A [B]), got {len(names)}")
        formats = tuple(parse_format(n) for n in names)
        formats = formats + (formats[-1],) * (2 - len(formats))
        out = parse_format(out) if out else formats[0]
        families = {f.family for f in formats + (out,)}
        if "posit" in families and (len(set(formats + (out,))) > 1):
            raise SpecError("posit mac takes one format for operands and result")
        if families & {"mx"}:
            raise SpecError("mac takes float, integer, fixed-point or posit formats; "
                            "MX blocks use `forma verify dot`")
        return cls(formats, out, stages)

    @property
    def title(self):
        args = " ".join(f.name for f in self.formats)
        return f"mac {args} -> {self.out.name}"

    @property
    def space(self):
        return (1 << self.formats[0].bits) * (1 << self.formats[1].bits)

    def component(self):
        if self.posit:
            from ..hdl.posit_pe import PositQuireMAC
            return PositQuireMAC(self.formats[0], stages=self.stages)
        from ..hdl.float_mac import FloatMAC
        return FloatMAC(*self.formats, self.out, length=ACCUMULATION_BOUND, stages=self.stages,
                        emit="every")

    # --- stimulus -----------------------------------------------------------------------------
    def _codes(self, fmt, values):
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
        neg_a = self._codes(fa, [-fa.decode(np.array([top_a], dtype=np.uint64))[0]])
        n = ACCUMULATION_BOUND
        streams = [([top_a] * n, [top_b] * n), ([low_a] * n, [low_b] * n)]
        if neg_a:
            streams.append(([top_a, neg_a[0]] * (n // 2), [top_b] * n))
            streams.append(([neg_a[0]] * n, [top_b] * n))
        one_b = self._codes(fb, [1.0])
        for values in ([np.inf], [-np.inf], [np.nan], [np.inf, -np.inf], [0.0, np.inf],
                       [-0.0], [-0.0, -0.0], [-0.0, 0.0], [1.0, -1.0]):
            a = self._codes(fa, values)
            if len(a) == len(values) and one_b:
                streams.append((a, one_b * len(a)))
        return streams + self.bit_streams()

    def bit_streams(self):
        """[(a, b)] streams whose exact sums are +-2**k and 2**k - 1 accumulator units for every
        accumulator bit k the bound reaches: each accumulator bit alone, and every run of low
        ones, is seen by the zero test and the rounding (float/int/fixed MACs; greedy sums of
        the largest products that fit, skipped where the products cannot hit the target)."""
        if self.posit:
            return []
        from fractions import Fraction
        from ..hdl.float_mac import lsb_exponent
        fa, fb = self.formats
        unit = Fraction(2) ** (lsb_exponent(fa) + lsb_exponent(fb))
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
        if not products:
            return []
        sizes = sorted(products)
        negate = {int(c): n[0] for c in fa.all_codes()
                  if (n := self._codes(fa, [-fa.decode(np.array([c], dtype=np.uint64))[0]]))}
        streams = []
        for bit in range((ACCUMULATION_BOUND * sizes[-1]).bit_length()):
            for target, sign in ((1 << bit, 1), (1 << bit, -1), ((1 << bit) - 1, 1)):
                pairs, rest = [], target
                while rest and len(pairs) <= ACCUMULATION_BOUND:
                    size = sizes[int(np.searchsorted(sizes, rest, side="right")) - 1] \
                        if rest >= sizes[0] else None
                    if size is None:
                        break
                    pairs.append(products[size])
                    rest -= size
                if rest or not pairs or len(pairs) > ACCUMULATION_BOUND:
                    continue
                if sign < 0:
                    if any(a not in negate for a, _ in pairs):
                        continue
                    pairs = [(negate[a], b) for a, b in pairs]
                streams.append(([a for a, _ in pairs], [b for _, b in pairs]))
        return streams

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
        the quire of PositFormat.quire_dot, 30 carry bits as the MAC's default)."""
        a, b, last = operands
        fa, fb = self.formats
        start = self._stream_starts(last)
        offset = np.arange(len(a)) - start
        want = np.zeros(len(a), dtype=np.uint64)
        for k in range(int(offset.max(initial=-1)) + 1):
            rows = np.flatnonzero(offset == k)
            index = start[rows][:, None] + np.arange(k + 1)
            want[rows] = dot(a[index], b[index], fa, fb, self.out, accumulate="exact")
        return want

    def fields(self, operands):
        a, b, last = operands
        fa, fb = self.formats
        return [(a, fa.bits), (b, fb.bits), (last, 1)]

    def pack(self, operands):
        return pack_fields(self.fields(operands))

    def streams(self, operands):
        """Streams stay whole on a lane; lanes are evened out with one-beat 0 × 0 streams."""
        zero = tuple(np.array(self._codes(f, [0.0])[:1] or [0], dtype=np.uint64) for f in self.formats)
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
