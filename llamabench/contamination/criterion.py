"""The LLaMA 2 contamination criterion (Touvron et al. 2023, appendix A.6) on token ids, with its skip budget.

The paper: "we consider a token to be contaminated if it appears in any token n-gram longer than 10 tokens in
both the evaluation sample and the training set", found as "10(+)-skipgrams" whose "matched spans [...] can differ
in at most four positions (we do not allow trailing mismatches, or mismatches in the first 10 tokens)", and the
analysis repeated for minimum match lengths L in {10, 20, 30, 40, 50}.

A *matched span* of minimum length L of an evaluation sample is a run of its tokens ``sample[a:b]`` laid against a
run of corpus tokens of the same length ``corpus[c:c + b - a]`` such that

- it is at least L tokens long (``longer_than``: more than L; see :data:`DEFAULT_LENGTHS`);
- its first min(10, L) tokens match exactly ("no mismatches in the first 10 tokens"), and so does its last ("no
  trailing mismatches");
- at most ``skip_budget`` positions differ (the paper's 4, the default; 0 is exact match).

A token is contaminated at L when it lies in a matched span of minimum length L (a position inside a span that
differs counts too: the span is what was found); a sample's contamination is the share of its counted tokens
(see below) so covered, and its longest contaminated span (Singh et al. 2024) the most counted tokens of one
matched span.

How it is found, for every L in one pass: every exact run of min(10, smallest L) sample tokens (a *seed*) is
hashed into the
:class:`SampleIndex`; a corpus text is hashed the same way and looked up, and each hit is confirmed token by token
(a hash collision never counts). Every matched span lies on one diagonal (corpus position - sample position
constant) and starts with a seed, inside a maximal exact run of tokens on that diagonal. The span that starts
where that run starts and grows along the diagonal up to its ``skip_budget + 1``-th mismatch, less any trailing
mismatches (a *grown span*), holds it: it differs in no more positions, and reaches at least as far. So the
matched spans of minimum length L are covered by the grown spans at least L long whose exact run is at least
min(10, L) long (:meth:`SampleIndex.holds`), which are themselves matched spans: their union and their longest
are those of all matched spans, for every L.

``counted[s]`` marks the tokens of sample ``s`` that are its document's own text (None: all); the rest (a task
template's words) are matched but never counted, and a seed of template words alone is not indexed, so a corpus
holding one rendered document does not flag the template in every other.

Worked example (L = 3, so ``head`` 3, exact): sample ``[5, 6, 7, 8, 9]``, corpus ``[1, 5, 6, 7, 2, 7, 8, 9]``. The
spans ``[5, 6, 7]`` (sample 0-2, corpus 1-3) and ``[7, 8, 9]`` (sample 2-4, corpus 5-7) cover all five tokens:
fraction 1.0, longest span 3. With L = 2 and ``skip_budget`` 1, corpus ``[5, 6, 0, 8, 9]`` gives one
span of 5 (one mismatch, at position 2, neither in the first 2 nor trailing); with L = 3 it gives none (the
mismatch is in the first 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The paper's minimum match lengths. A span counts at L when it is at least L tokens long: the paper's L is a
# "minimum match length" and its spans are "10(+)-skipgrams"; its "longer than 10 tokens" (11) is the option
# ``longer_than``. The two readings differ by one token at every L.
DEFAULT_LENGTHS = (10, 20, 30, 40, 50)
# "no mismatches in the first 10 tokens"
EXACT_HEAD = 10
# The paper's subsets: clean < 20 % <= not clean; not dirty < 80 % <= dirty.
CLEAN_BELOW = 0.2
DIRTY_FROM = 0.8
# The paper's skipgram budget, the default (0: exact match).
PAPER_SKIP_BUDGET = 4

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
class Span:
    """A grown span: sample ``sample``'s tokens ``start:end`` matched from ``corpus_pos`` of a corpus text, holding
    ``length`` counted tokens; its first ``exact`` tokens match exactly."""

    sample: int
    start: int
    end: int
    corpus_pos: int
    length: int
    exact: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.start, self.end, self.exact


@dataclass
class SampleIndex:
    """Every seed (``head`` tokens) of the evaluation samples, by hash: the only thing held in memory.

    ``keys`` are the distinct hashes, sorted; the samples and positions holding hash ``keys[k]`` are
    ``entries[starts[k]:starts[k + 1]]`` (rows of ``(sample, position)``).
    """

    samples: list[np.ndarray]
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    counted: list[np.ndarray] | None = None
    skip_budget: int = PAPER_SKIP_BUDGET
    longer_than: bool = False
    keys: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)
    entries: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = tuple(sorted(set(self.lengths)))
        if not self.lengths or self.lengths[0] < 2 or self.skip_budget < 0:
            raise ValueError(f"lengths {self.lengths} must be >= 2 and skip_budget {self.skip_budget} >= 0")
        self.samples = [np.asarray(tokens, dtype=np.int64) for tokens in self.samples]
        if self.counted is None:
            self.counted = [np.ones(len(tokens), dtype=bool) for tokens in self.samples]
        seed = self.seed
        owners, positions, hashes = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.uint64)]
        for number, (tokens, counted) in enumerate(zip(self.samples, self.counted, strict=True)):
            windows = window_hashes(tokens, seed)
            own = np.flatnonzero(_window_sums(counted, seed)[: len(windows)] > 0)
            hashes.append(windows[own])
            positions.append(own)
            owners.append(np.full(len(own), number))
        all_hashes = np.concatenate(hashes)
        order = np.argsort(all_hashes, kind="stable")
        self.keys, self.starts = np.unique(all_hashes[order], return_index=True)
        self.starts = np.append(self.starts, len(order))
        self.entries = np.stack([np.concatenate(owners)[order], np.concatenate(positions)[order]], axis=1)
        self._flat = np.concatenate([np.empty(0, np.int64), *self.samples])
        self._offsets = np.concatenate([[0], np.cumsum([len(tokens) for tokens in self.samples])])

    @property
    def seed(self) -> int:
        """The exact head of every span, and the length of the hashed seeds."""
        return min(EXACT_HEAD, self.lengths[0])

    def shortest(self, length: int) -> int:
        """How many tokens a span needs to count at minimum match length ``length``."""
        return length + 1 if self.longer_than else length

    def holds(self, span: tuple[int, int, int], length: int) -> bool:
        """Whether a grown span ``(start, end, exact)`` is a matched span at minimum length ``length``."""
        start, end, exact = span
        return end - start >= self.shortest(length) and exact >= min(EXACT_HEAD, length)

    def detectable(self, sample: int, length: int) -> bool:
        """Whether sample ``sample`` is long enough to hold a matched span at ``length`` at all."""
        return len(self.samples[sample]) >= self.shortest(length)

    def hits(self, tokens: np.ndarray) -> np.ndarray:
        """Rows ``(sample, sample_pos, corpus_pos)``: every seed of a sample equal to the corpus text ``tokens``
        at ``corpus_pos``, token for token."""
        tokens = np.asarray(tokens, dtype=np.int64)
        hashes = window_hashes(tokens, self.seed)
        if not len(hashes) or not len(self.keys):
            return np.empty((0, 3), dtype=np.int64)
        slots = np.searchsorted(self.keys, hashes).clip(max=len(self.keys) - 1)
        found = np.flatnonzero(self.keys[slots] == hashes)
        first, last = self.starts[slots[found]], self.starts[slots[found] + 1]
        counts = last - first
        corpus_pos = np.repeat(found, counts)
        # The entries of each found hash, in one array: first[k], first[k] + 1, ... for every k.
        entry = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        sample, sample_pos = self.entries[entry, 0], self.entries[entry, 1]
        steps = np.arange(self.seed)
        theirs = self._flat[(self._offsets[sample] + sample_pos)[:, None] + steps]
        ours = tokens[corpus_pos[:, None] + steps]
        equal = (theirs == ours).all(axis=1)
        return np.stack([sample[equal], sample_pos[equal], corpus_pos[equal]], axis=1)

    def spans(self, tokens: np.ndarray) -> list[Span]:
        """The grown spans of every sample in the corpus text ``tokens`` long enough for the smallest length, one
        per maximal exact run on a diagonal that holds a seed."""
        tokens = np.asarray(tokens, dtype=np.int64)
        hits = self.hits(tokens)
        if not len(hits):
            return []
        seen = {tuple(row) for row in hits.tolist()}
        grown: dict[tuple[int, int, int], Span] = {}
        shortest = self.shortest(self.lengths[0])
        for sample, start, corpus_pos in hits.tolist():
            if (sample, start - 1, corpus_pos - 1) in seen:
                continue  # not the first hit of its run: the run's start grows a span at least as far
            theirs = self.samples[sample]
            while start and corpus_pos and theirs[start - 1] == tokens[corpus_pos - 1]:
                start, corpus_pos = start - 1, corpus_pos - 1  # back to the run's start (unindexed seeds)
            if (sample, start, corpus_pos) in grown:
                continue
            reach, exact = self._reach(theirs[start:], tokens[corpus_pos:])
            if reach >= shortest:
                length = int(self.counted[sample][start : start + reach].sum())
                grown[sample, start, corpus_pos] = Span(sample, start, start + reach, corpus_pos, length, exact)
        return list(grown.values())

    def _reach(self, theirs: np.ndarray, ours: np.ndarray) -> tuple[int, int]:
        """How far a span starting with a seed goes (up to the ``skip_budget + 1``-th mismatch, then back over
        trailing mismatches), and how many of its first tokens match exactly."""
        size = min(len(theirs), len(ours))
        mismatches = np.flatnonzero(theirs[:size] != ours[:size])
        end = int(mismatches[self.skip_budget]) if len(mismatches) > self.skip_budget else size
        inside = set(mismatches[mismatches < end].tolist())
        while end - 1 in inside:
            end -= 1
        return end, min(int(mismatches[0]) if len(mismatches) else size, end)

    def fraction(self, sample: int, spans) -> float:
        """The share of the sample's counted tokens inside one of ``spans`` (``(start, end, ...)`` tuples)."""
        counted = self.counted[sample]
        if not counted.any():
            return 0.0
        covered = np.zeros(len(counted) + 1, dtype=np.int64)
        for start, end, *_ in spans:
            covered[start] += 1
            covered[end] -= 1
        inside = np.cumsum(covered[: len(counted)]) > 0
        return float((inside & counted).sum() / counted.sum())


def _window_sums(flags: np.ndarray, n: int) -> np.ndarray:
    """How many of ``flags`` are set in each length-``n`` window (as many windows as there are flags)."""
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    ends = np.minimum(np.arange(len(flags)) + n, len(flags))
    return total[ends] - total[: len(flags)]


SUBSETS = ("clean", "not_clean", "not_dirty", "dirty")


def subsets(fraction: float) -> dict[str, bool]:
    """The paper's four overlapping subsets a sample with contaminated ``fraction`` belongs to."""
    return {
        "clean": fraction < CLEAN_BELOW,
        "not_clean": fraction >= CLEAN_BELOW,
        "not_dirty": fraction < DIRTY_FROM,
        "dirty": fraction >= DIRTY_FROM,
    }
