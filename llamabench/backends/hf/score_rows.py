"""Scoring rows: what one row of a log-likelihood forward pass feeds the model and which of its positions score
which request's target tokens.

A request is a ``ScoreItem``: a token sequence whose last ``n_target`` tokens are scored, each given every token
before it. Most items run as a plain row, fed all their tokens but the last. Items that share the tokens before
their targets (the choices of a multiple-choice question after one few-shot prompt) run as one *shared-prefix* row:
the prefix once, then each continuation, each continuation seeing the prefix and its own earlier tokens only, at
the positions it would have on its own. For the prefix ``a b`` and the continuations ``c d`` and ``e f g``::

    fed        a  b  c  e  f        (a continuation's last token predicts nothing, so it is not fed)
    position   0  1  2  2  3
    segment    0  0  1  2  2        (token i sees token j <= i when j is in segment 0 or in i's own segment)
    c <- b, d <- c;  e <- b, f <- e, g <- f

Every scored token sees exactly the tokens, at exactly the positions, that its plain row would give it, so the
log-likelihoods equal the unshared ones up to floating-point summation order; the prefix's tokens run once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llamabench.backends.common.score_items import ScoreItem
from llamabench.backends.finite import require_finite

# Rows of hidden states projected to vocabulary logits at once: bounds the [rows, vocab] fp32 buffer.
LOGIT_ROWS = 2048


@dataclass(frozen=True)
class ScoreRow:
    """One row of a scoring pass: ``tokens`` fed at ``positions``; ``segments`` (None for a plain causal row)
    limits attention as drawn in the module docstring. Request ``items[k]`` is scored by the hidden states at
    ``predictors[k]``, whose next tokens are ``targets[k]``."""

    tokens: list[int]
    positions: list[int]
    segments: list[int] | None
    items: list[int]
    predictors: list[list[int]]
    targets: list[list[int]]


def plain_row(index: int, item: ScoreItem) -> ScoreRow:
    """Item ``index`` on a row of its own: fed all tokens but the last, the last ``n_target`` positions scored."""
    fed = len(item.tokens) - 1
    return ScoreRow(
        tokens=item.tokens[:-1],
        positions=list(range(fed)),
        segments=None,
        items=[index],
        predictors=[list(range(fed - item.n_target, fed))],
        targets=[item.tokens[-item.n_target :]],
    )


def shared_prefix_rows(items: list[ScoreItem], max_tokens: int) -> list[ScoreRow]:
    """One row per group of items sharing their prefix (the tokens before their targets, as the items were cut
    to the window), a plain row for every other item. A group whose row would feed more than ``max_tokens``
    (the longest plain row) is split over several rows, each with its own copy of the prefix."""
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        by_prefix.setdefault(tuple(item.tokens[: -item.n_target]), []).append(index)
    rows = []
    for prefix, members in by_prefix.items():
        if len(members) == 1:
            rows.append(plain_row(members[0], items[members[0]]))
            continue
        group: list[int] = []
        for index in sorted(members, key=lambda i: items[i].n_target):
            if group and _shared_width(prefix, [items[i] for i in [*group, index]]) > max_tokens:
                rows.append(_shared_row(prefix, group, items))
                group = []
            group.append(index)
        rows.append(_shared_row(prefix, group, items) if len(group) > 1 else plain_row(group[0], items[group[0]]))
    return rows


def _shared_width(prefix: tuple[int, ...], members: list[ScoreItem]) -> int:
    return len(prefix) + sum(item.n_target - 1 for item in members)


def _shared_row(prefix: tuple[int, ...], members: list[int], items: list[ScoreItem]) -> ScoreRow:
    tokens, positions, segments = list(prefix), list(range(len(prefix))), [0] * len(prefix)
    predictors, targets = [], []
    for segment, index in enumerate(members, start=1):
        continuation = items[index].tokens[-items[index].n_target :]
        start = len(tokens)
        fed = continuation[:-1]
        tokens += fed
        positions += range(len(prefix), len(prefix) + len(fed))
        segments += [segment] * len(fed)
        # The first target is predicted by the prefix's last token, the others by the continuation's own.
        predictors.append([len(prefix) - 1, *range(start, start + len(fed))])
        targets.append(continuation)
    return ScoreRow(tokens, positions, segments, members, predictors, targets)


def attention_mask(rows: list[ScoreRow], width: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive [rows, 1, width, width] mask of a batch holding a shared-prefix row: 0 where a token may
    attend, the dtype's lowest value elsewhere. Padding attends to itself only, so no softmax row is empty."""
    allowed = torch.zeros(len(rows), width, width, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for r, row in enumerate(rows):
        n = len(row.tokens)
        if row.segments is None:
            allowed[r, :n, :n] = causal[:n, :n]
        else:
            segment = torch.tensor(row.segments)
            same = (segment[None, :] == 0) | (segment[None, :] == segment[:, None])
            allowed[r, :n, :n] = same & causal[:n, :n]
        allowed[r, range(n, width), range(n, width)] = True
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.inference_mode()
def score_batch(model, rows: list[ScoreRow], pad_token: int) -> list[list[tuple[float, bool]]]:
    """Each row's requests' (log-likelihood, is-greedy), from one forward pass over the right-padded rows."""
    device = model.get_input_embeddings().weight.device  # where inputs go, also under a device map
    lengths = [len(row.tokens) for row in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad_token, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, : lengths[r]] = torch.tensor(row.tokens)
    position_ids = None
    if any(row.segments is not None for row in rows):
        # Shared-prefix rows: continuations restart their positions after the prefix, and see only it.
        mask = attention_mask(rows, width, model.dtype)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            position_ids[r, : lengths[r]] = torch.tensor(row.positions)
        position_ids = position_ids.to(device)
    elif min(lengths) != width:
        mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    else:
        mask = None
    # Scoring reads every position once: a key/value cache would be built (tens of GB on a 7B model at the
    # GPU budget) and never read.
    hidden = model.base_model(
        input_ids=input_ids.to(device),
        attention_mask=None if mask is None else mask.to(device),
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state
    # Only the scored positions go through the vocabulary projection and log-softmax.
    spans = [
        (r, predictors, targets)
        for r, row in enumerate(rows)
        for predictors, targets in zip(row.predictors, row.targets, strict=True)
    ]
    positions = torch.tensor([r * width + p for r, predictors, _ in spans for p in predictors])
    targets = torch.tensor([t for _, _, span_targets in spans for t in span_targets], device=device)
    # Under a device map the last layer (and the head) may sit on another GPU than the inputs.
    selected = hidden.reshape(-1, hidden.shape[-1])[positions.to(hidden.device)]
    head = model.get_output_embeddings()
    logprobs, greedy = [], []
    for start in range(0, len(selected), LOGIT_ROWS):
        logits = head(selected[start : start + LOGIT_ROWS]).float()
        chunk_targets = targets[start : start + LOGIT_ROWS].to(logits.device)
        logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, chunk_targets[:, None])[:, 0])
        greedy.append(logits.argmax(dim=-1) == chunk_targets)
    token_logprobs = torch.cat(logprobs).double().cpu()
    # Before anything is summed or compared: a NaN sum would still sort, and argmax over NaN logits names a token.
    require_finite(token_logprobs, "log-probabilities")
    token_greedy = torch.cat(greedy).cpu()
    out: list[list[tuple[float, bool]]] = [[] for _ in rows]
    offset = 0
    for r, _, span_targets in spans:
        span = slice(offset, offset + len(span_targets))
        out[r].append((float(token_logprobs[span].sum()), bool(token_greedy[span].all())))
        offset += len(span_targets)
    return out
