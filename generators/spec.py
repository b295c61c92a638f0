"""Design specs: a kind followed by key=value words, e.g. `mac a=int8 w=int4 acc=int24 stages=2`.

`parse_spec` checks the words against the kind's known keys; `DesignSpec.slug` names build folders.
"""
import re
from dataclasses import dataclass

from ..errors import SpecError


@dataclass(frozen=True)
class DesignSpec:
    kind: str
    params: tuple  # ((key, value), ...) in the order given

    @property
    def text(self):
        return " ".join([self.kind] + [f"{k}={v}" for k, v in self.params])

    @property
    def slug(self):
        """A file-system-safe folder name, e.g. `mac-a_int8-w_int4`."""
        words = [self.kind] + [f"{k}_{v}" for k, v in self.params]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(words))

    def __str__(self):
        return self.text


def parse_spec(words, kinds):
    """DesignSpec from `words` (a string or list of words); `kinds` maps kind → allowed keys."""
    if isinstance(words, str):
        words = words.split()
    if not words:
        raise SpecError(f"empty design spec; give a kind and key=value words, e.g. "
                        f"'mac a=int8 w=int8' (kinds: {', '.join(sorted(kinds))})")
    kind, *rest = words
    if kind not in kinds:
        raise SpecError(f"unknown design kind '{kind}'; known kinds: {', '.join(sorted(kinds))}")
    params = []
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise SpecError(f"'{word}' in the design spec is not key=value (e.g. a=int8)")
        if key not in kinds[kind]:
            raise SpecError(f"unknown parameter '{key}' for {kind}; allowed: {', '.join(kinds[kind])}")
        if key in dict(params):
            raise SpecError(f"parameter '{key}' is given twice in the design spec")
        params.append((key, value))
    return DesignSpec(kind, tuple(params))
