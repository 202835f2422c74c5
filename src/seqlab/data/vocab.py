"""Token <-> id vocabularies with the special tokens every task shares.

Ids 0..3 are always ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` (in that order) so padding is 0
everywhere and masks are simply ``ids != PAD``. Tokens are characters (char-level LM, g2p
spelling), words (sentiment) or phoneme symbols (g2p target).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    """An ordered token list; ``stoi`` maps back. Unknown tokens map to ``UNK``."""

    def __init__(self, tokens: Iterable[str]):
        self.itos: list[str] = list(SPECIALS)
        for t in tokens:
            if t not in SPECIALS:
                self.itos.append(t)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("tokens: expected unique tokens, found duplicates")

    @classmethod
    def build(
        cls, sequences: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Vocabulary of tokens seen at least ``min_count`` times, most frequent first
        (ties broken alphabetically, so the result does not depend on dict order)."""
        counts = Counter(t for seq in sequences for t in seq)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str], bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, UNK) for t in tokens]
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Ids -> tokens; stops at the first ``EOS`` and drops pad/bos when stripping."""
        out = []
        for i in ids:
            i = int(i)
            if strip_specials and i == EOS:
                break
            if strip_specials and i in (PAD, BOS):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else SPECIALS[UNK])
        return out

    def to_list(self) -> list[str]:
        """JSON-friendly form (the specials included); ``Vocab.from_list`` inverts it."""
        return list(self.itos)

    @classmethod
    def from_list(cls, itos: list[str]) -> Vocab:
        if list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"itos: expected to start with {SPECIALS}, got {itos[:4]}")
        return cls(itos[len(SPECIALS) :])


_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def word_tokens(text: str) -> list[str]:
    """Lower-cased words, with punctuation marks as their own tokens ("isn't" stays one word)."""
    return _WORD_RE.findall(text.lower())
