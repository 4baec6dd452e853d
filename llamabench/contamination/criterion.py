"""The LLaMA 2 contamination criterion (Touvron et al. 2023, appendix A.6), exact-match form, on token ids.

A token of an evaluation sample is contaminated when it lies in a run of at least ``min_ngram`` consecutive tokens
of the sample that also occurs, contiguously, in the corpus. Every such run is covered by the length-``min_ngram``
windows inside it, each of which occurs in the corpus too, and a window that occurs in the corpus is such a run
itself, so the contaminated tokens are exactly the union of the sample's length-``min_ngram`` windows found in the
corpus. That is what is computed: the sample's windows are hashed into the :class:`SampleIndex`; a corpus text is
hashed the same way and looked up; every hash hit is confirmed token by token (a hash collision never counts).

The longest contaminated span (Singh et al. 2024) is the longest run of tokens of the sample found contiguously in
the corpus; at least ``min_ngram`` or 0. Consecutive window hits on one diagonal (corpus position - sample
position constant) are one run of ``hits + min_ngram - 1`` tokens.

Worked example (``min_ngram`` 3): sample ``[5, 6, 7, 8, 9]``, corpus ``[1, 5, 6, 7, 2, 7, 8, 9]``. The windows
``(5,6,7)`` (sample position 0, corpus 1) and ``(7,8,9)`` (sample 2, corpus 5) hit; tokens 0-4 are covered, the
fraction is 5/5 = 1.0, and the longest span is 3 (the two hits lie on different diagonals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The paper: "any token n-gram longer than 10 tokens", so at least 11.
DEFAULT_MIN_NGRAM = 11
# The paper's subsets: clean < 20 % < not clean; not dirty < 80 % <= dirty.
CLEAN_BELOW = 0.2
DIRTY_FROM = 0.8

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash (arithmetic modulo 2**64)


def window_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """The hash of every length-``n`` window of ``tokens`` (``len(tokens) - n + 1`` of them, none if shorter)."""
    tokens = np.asarray(tokens, dtype=np.uint64)
    count = len(tokens) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):
            hashes = hashes * _BASE + tokens[offset : offset + count]
    return hashes


@dataclass(frozen=True)
class Hit:
    """Window ``sample_pos`` of sample ``sample`` equals window ``corpus_pos`` of a corpus text."""

    sample: int
    sample_pos: int
    corpus_pos: int


@dataclass
class SampleIndex:
    """Every length-``min_ngram`` window of the evaluation samples, by hash: the only thing held in memory.

    ``counted[s]`` marks the tokens of sample ``s`` that are its document's own text (None: all of them); the
    rest (a task template's words) are matched but never counted, and a window of template words alone is not
    indexed, so a corpus holding one rendered document does not flag the template in every other.

    ``keys`` are the distinct hashes, sorted; the samples and positions holding hash ``keys[k]`` are
    ``entries[starts[k]:starts[k + 1]]`` (rows of ``(sample, position)``).
    """

    samples: list[np.ndarray]
    min_ngram: int
    counted: list[np.ndarray] | None = None
    keys: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)
    entries: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.samples = [np.asarray(tokens, dtype=np.int64) for tokens in self.samples]
        if self.counted is None:
            self.counted = [np.ones(len(tokens), dtype=bool) for tokens in self.samples]
        owners, positions, hashes = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.uint64)]
        for number, (tokens, counted) in enumerate(zip(self.samples, self.counted, strict=True)):
            windows = window_hashes(tokens, self.min_ngram)
            own = np.flatnonzero(_window_sums(counted, self.min_ngram)[: len(windows)] > 0)
            hashes.append(windows[own])
            positions.append(own)
            owners.append(np.full(len(own), number))
        all_hashes = np.concatenate(hashes)
        order = np.argsort(all_hashes, kind="stable")
        self.keys, self.starts = np.unique(all_hashes[order], return_index=True)
        self.starts = np.append(self.starts, len(order))
        self.entries = np.stack([np.concatenate(owners)[order], np.concatenate(positions)[order]], axis=1)

    def hits(self, tokens: np.ndarray) -> list[Hit]:
        """Every (indexed sample window, corpus window) pair of equal tokens in the corpus text ``tokens``."""
        tokens = np.asarray(tokens, dtype=np.int64)
        hashes = window_hashes(tokens, self.min_ngram)
        if not len(hashes) or not len(self.keys):
            return []
        slots = np.searchsorted(self.keys, hashes).clip(max=len(self.keys) - 1)
        found = np.flatnonzero(self.keys[slots] == hashes)
        n = self.min_ngram
        hits = []
        for corpus_pos in found.tolist():
            key = slots[corpus_pos]
            window = tokens[corpus_pos : corpus_pos + n]
            for sample, sample_pos in self.entries[self.starts[key] : self.starts[key + 1]].tolist():
                if np.array_equal(self.samples[sample][sample_pos : sample_pos + n], window):
                    hits.append(Hit(sample, sample_pos, corpus_pos))
        return hits

    def longest_spans(self, hits: list[Hit]) -> dict[int, Span]:
        """Each hit sample's longest run in one corpus text (consecutive hits on a diagonal joined), measured in
        the sample's counted tokens."""
        best: dict[int, Span] = {}
        ordered = sorted(hits, key=lambda h: (h.sample, h.corpus_pos - h.sample_pos, h.corpus_pos))
        start = 0
        for i, hit in enumerate(ordered):
            following = ordered[i + 1] if i + 1 < len(ordered) else None
            if (
                following is not None
                and following.sample == hit.sample
                and following.sample_pos == hit.sample_pos + 1
                and following.corpus_pos == hit.corpus_pos + 1
            ):
                continue  # the run goes on
            first = ordered[start]
            end = hit.sample_pos + self.min_ngram
            length = int(self.counted[first.sample][first.sample_pos : end].sum())
            if first.sample not in best or length > best[first.sample].length:
                best[first.sample] = Span(first.sample, first.sample_pos, first.corpus_pos, length)
            start = i + 1
        return best

    def fraction(self, sample: int, window_starts: np.ndarray) -> float:
        """The share of the sample's counted tokens inside a matched window starting at one of ``window_starts``."""
        counted = self.counted[sample]
        if not counted.any():
            return 0.0
        covered = np.zeros(len(counted) + 1, dtype=np.int64)
        starts = np.asarray(window_starts, dtype=np.int64)
        np.add.at(covered, starts, 1)
        np.add.at(covered, starts + self.min_ngram, -1)
        inside = np.cumsum(covered[: len(counted)]) > 0
        return float((inside & counted).sum() / counted.sum())


def _window_sums(flags: np.ndarray, n: int) -> np.ndarray:
    """How many of ``flags`` are set in each length-``n`` window (as many windows as there are flags)."""
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    ends = np.minimum(np.arange(len(flags)) + n, len(flags))
    return total[ends] - total[: len(flags)]


@dataclass(frozen=True)
class Span:
    """A run of sample ``sample``'s tokens from ``sample_pos``, found at ``corpus_pos`` of a corpus text, holding
    ``length`` counted tokens."""

    sample: int
    sample_pos: int
    corpus_pos: int
    length: int


def subsets(fraction: float) -> dict[str, bool]:
    """The paper's four overlapping subsets a sample with contaminated ``fraction`` belongs to."""
    return {
        "clean": fraction < CLEAN_BELOW,
        "not_clean": fraction >= CLEAN_BELOW,
        "not_dirty": fraction < DIRTY_FROM,
        "dirty": fraction >= DIRTY_FROM,
    }
