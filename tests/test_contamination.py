"""The LLaMA 2 contamination criterion: hand-computed fractions, a naive quadratic scan as the oracle on random
corpora (streamed in small overlapping units on worker processes), and a corpus holding planted copies of real
documents of the built-in tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import cli_error
from conftest import byte_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamabench.cli.app import main
from llamabench.contamination import corpus
from llamabench.contamination.criterion import SampleIndex, subsets
from llamabench.contamination.result import contamination_rows, read_contamination
from llamabench.contamination.samples import EvalSample, SampleText, own_characters, tokenize_samples
from llamabench.contamination.scan import Findings, scan, scan_corpus

# --- fractions by hand ---------------------------------------------------------------------------------------


def _scan_tokens(samples, texts, lengths, counted=None, skip: int = 0, longer_than: bool = False) -> dict:
    """{L: [(fraction, longest) per sample]} for minimum lengths ``lengths`` (an int: one), in one pass."""
    lengths = (lengths,) if isinstance(lengths, int) else lengths
    index = SampleIndex([np.array(s) for s in samples], lengths, counted, skip, longer_than)
    found = Findings()
    for text in texts:
        for span in index.spans(np.array(text)):
            found.spans.setdefault(span.sample, set()).add(span.key)
            for length in index.lengths:
                if index.holds(span.key, length):
                    key = (span.sample, length)
                    found.longest[key] = (max(found.longest.get(key, (0, None))[0], span.length), None)
    result = {}
    for length in index.lengths:
        rows = []
        for i in range(len(samples)):
            spans = [span for span in found.spans.get(i, ()) if index.holds(span, length)]
            rows.append((index.fraction(i, spans), found.longest.get((i, length), (0, None))[0]))
        result[length] = rows
    return result if len(lengths) > 1 else result[lengths[0]]


def _substituted(tokens: list[int], positions) -> list[int]:
    return [900 + i if i in positions else token for i, token in enumerate(tokens)]


def test_worked_example_of_the_module():
    # Windows (5,6,7) and (7,8,9) are in the corpus: all 5 tokens covered, two runs of 3.
    assert _scan_tokens([[5, 6, 7, 8, 9]], [[1, 5, 6, 7, 2, 7, 8, 9]], 3) == [(1.0, 3)]
    assert _scan_tokens([[5, 6, 7, 8, 9]], [[5, 6, 0, 8, 9]], 2, skip=1) == [(1.0, 5)]
    assert _scan_tokens([[5, 6, 7, 8, 9]], [[5, 6, 0, 8, 9]], 3, skip=1) == [(0.0, 0)]


def test_papers_skipgram_rule_by_hand():
    """L = 10, budget 4 (the paper's): the exact head is the first 10 tokens; counted by hand."""
    sample = list(range(25))
    # Four substitutions past the first ten tokens: one span of all 25.
    assert _scan_tokens([sample], [_substituted(sample, {10, 13, 16, 19})], 10, skip=4) == [(1.0, 25)]
    # Exact match instead: only 0-9 (10 tokens) is an exact run of 10 or more: 10/25.
    assert _scan_tokens([sample], [_substituted(sample, {10, 13, 16, 19})], 10) == [(10 / 25, 10)]
    # At L = 20, four substitutions in 20 tokens match; a fifth leaves no span of 20 that differs in four.
    twenty = list(range(20))
    assert _scan_tokens([twenty], [_substituted(twenty, {10, 12, 14, 16})], 20, skip=4) == [(1.0, 20)]
    assert _scan_tokens([twenty], [_substituted(twenty, {10, 12, 14, 16, 18})], 20, skip=4) == [(0.0, 0)]
    # At L = 10 the fifth ends the span before it: 0-17 (mismatches 10, 12, 14, 16; 17 matches), 18 tokens.
    assert _scan_tokens([twenty], [_substituted(twenty, {10, 12, 14, 16, 18})], 10, skip=4) == [(18 / 20, 18)]
    # A substitution in the first ten tokens: 14 tokens cut at 5 into runs of 5 and 8, both under 10: no match.
    fourteen = list(range(14))
    assert _scan_tokens([fourteen], [_substituted(fourteen, {5})], 10, skip=4) == [(0.0, 0)]
    # ...in a longer sample the span starts after it: 4-29, 26 of 30 tokens.
    thirty = list(range(30))
    assert _scan_tokens([thirty], [_substituted(thirty, {3})], 10, skip=4) == [(26 / 30, 26)]
    # No trailing mismatch: the last token substituted is not covered (20 of 21).
    sample = list(range(21))
    assert _scan_tokens([sample], [_substituted(sample, {20})], 10, skip=4) == [(20 / 21, 20)]
    # ...nor are trailing ones inside the budget: 0-14 then 15, 16 substituted and the copy ends.
    assert _scan_tokens([sample], [_substituted(sample[:17], {15, 16})], 10, skip=4) == [(15 / 21, 15)]


def test_ten_plus_or_longer_than_ten():
    """A copy of exactly 10 tokens counts at L = 10 ("10(+)-skipgrams"), not with --longer-than ("longer than
    10 tokens"); 11 counts under both."""
    sample = list(range(30))
    assert _scan_tokens([sample], [sample[:10]], 10, skip=4) == [(10 / 30, 10)]
    assert _scan_tokens([sample], [sample[:10]], 10, skip=4, longer_than=True) == [(0.0, 0)]
    assert _scan_tokens([sample], [sample[:11]], 10, skip=4, longer_than=True) == [(11 / 30, 11)]


def test_every_length_in_one_pass_by_hand():
    sample = list(range(60))
    corpus_texts = [sample[:25], [500] * 3, sample[30:]]  # runs of 25 and 30 tokens
    by_length = _scan_tokens([sample], corpus_texts, (10, 20, 30, 40, 50), skip=4)
    assert by_length == {
        10: [(55 / 60, 30)],
        20: [(55 / 60, 30)],
        30: [(30 / 60, 30)],
        40: [(0.0, 0)],
        50: [(0.0, 0)],
    }
    index = SampleIndex([np.array(sample), np.arange(15)], (10, 20))
    assert [index.detectable(1, length) for length in (10, 20)] == [True, False]


def test_skip_budget_by_hand():
    sample = list(range(20))
    # Two changed positions (5 and 12), L = 5: one span of 20 with budget 2, two overlapping with 1, three runs.
    text = [*range(5), 99, *range(6, 12), 99, *range(13, 20)]
    assert _scan_tokens([sample], [text], 5, skip=2) == [(1.0, 20)]
    assert _scan_tokens([sample], [text], 5, skip=1) == [(1.0, 14)]  # 0-11 (12), and 6-19 (14, from the run at 6)
    assert _scan_tokens([sample], [text], 5) == [(0.9, 7)]  # runs 0-4, 6-11, 13-19 (7): 5 and 12 left out


def test_fractions_by_hand():
    sample = list(range(10))
    # Tokens 2..7 (6 of 10) occur contiguously: windows at 2, 3, 4, 5 of length 3.
    assert _scan_tokens([sample], [[99, 2, 3, 4, 5, 6, 7, 99]], 3) == [(0.6, 6)]
    # Two pieces: 0..3 and 6..9 (8 of 10), longest 4; a piece of 2 tokens (shorter than 3) does not count.
    assert _scan_tokens([sample], [[0, 1, 2, 3], [6, 7, 8, 9], [4, 5]], 3) == [(0.8, 4)]
    # The same tokens in another order are no match; a match of exactly the minimum length is one.
    assert _scan_tokens([sample], [[2, 1, 0, 9, 8]], 3) == [(0.0, 0)]
    assert _scan_tokens([sample], [[7, 8, 9]], 3) == [(0.3, 3)]
    # Tokens 0-1 are template words: not counted (8 document tokens), and the window (0,1,2) holds a document
    # token, so it is indexed: 0..4 found covers document tokens 2, 3, 4 = 3/8; longest 3 document tokens.
    counted = [np.array([False, False] + [True] * 8)]
    assert _scan_tokens([sample], [[0, 1, 2, 3, 4]], 3, counted) == [(3 / 8, 3)]
    # A window of template words alone is not indexed: finding it flags nothing.
    counted = [np.array([False, False, False] + [True] * 7)]
    assert _scan_tokens([sample], [[0, 1, 2]], 3, counted) == [(0.0, 0)]


def test_subsets_at_the_papers_thresholds():
    assert subsets(0.0) == {"clean": True, "not_clean": False, "not_dirty": True, "dirty": False}
    assert subsets(0.2) == {"clean": False, "not_clean": True, "not_dirty": True, "dirty": False}
    assert subsets(0.8) == {"clean": False, "not_clean": True, "not_dirty": False, "dirty": True}


def test_own_characters_mark_the_fields_not_the_template():
    text = "Translate: Guten Tag\nEnglish: Good day"
    own = own_characters(text, {"source": "Guten Tag", "reference": "Good day", "id": 7})
    assert "".join(c for c, mine in zip(text, own, strict=True) if mine) == "Guten TagGood day"
    assert own_characters("detokenised", {"page": "de tokenised"}).all()  # no field occurs: the whole text


# --- a naive quadratic scan as the oracle -------------------------------------------------------------------


def _naive(sample: str, corpus_texts: list[str], n: int, skip: int = 0) -> tuple[float, int]:
    """Every run of the sample of >= n characters (one byte, one token) against every equally long run of every
    corpus text: at most ``skip`` differences, none in the first min(10, n) and none at the end."""
    head = min(10, n)
    covered = [False] * len(sample)
    longest = 0
    for a in range(len(sample)):
        for b in range(a + n, len(sample) + 1):
            piece = sample[a:b]
            if not skip:  # the exact case, at the speed of str.find
                if any(piece in text for text in corpus_texts):
                    covered[a:b] = [True] * (b - a)
                    longest = max(longest, b - a)
                continue
            for text in corpus_texts:
                for c in range(len(text) - len(piece) + 1):
                    other = text[c : c + len(piece)]
                    differ = [i for i in range(len(piece)) if piece[i] != other[i]]
                    if len(differ) <= skip and all(head <= i < len(piece) - 1 for i in differ):
                        covered[a:b] = [True] * (b - a)
                        longest = max(longest, b - a)
                        break
    return (sum(covered) / len(sample) if sample else 0.0), longest


@pytest.fixture(scope="module")
def byte_tokenizer_json() -> str:
    return byte_tokenizer().backend_tokenizer.to_str()


def _byte_samples(texts: list[str], tokenizer_json: str) -> list[EvalSample]:
    """``texts`` as samples of task ``t`` under the byte tokenizer (one token a byte), every token counted."""
    from tokenizers import Tokenizer

    items = [SampleText("t", str(i), text, np.ones(len(text), bool)) for i, text in enumerate(texts)]
    return tokenize_samples(items, Tokenizer.from_str(tokenizer_json))


def _byte_scan(folder: Path, samples: list[str], tokenizer_json: str, lengths, skip: int, unit_bytes: int):
    """``samples`` scanned for in every file of ``folder`` cut into units of ``unit_bytes`` (no context slack: the
    byte tokenizer needs none), on one process: the table by length, and the findings."""
    eval_samples = _byte_samples(samples, tokenizer_json)
    index = SampleIndex([s.tokens for s in eval_samples], lengths, skip_budget=skip)
    files = sorted(folder.iterdir())
    found, _ = scan_corpus(files, samples, tokenizer_json, index, "text", unit_bytes=unit_bytes, context_bytes=0)
    return contamination_rows(eval_samples, found, index)["t"], found


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    samples=st.lists(st.text("ab\n", min_size=1, max_size=12), min_size=1, max_size=3),
    lines=st.lists(st.text("ab", max_size=20), max_size=6),
    n=st.integers(2, 5),
    skip=st.integers(0, 2),
    unit_bytes=st.integers(1, 40),
)
def test_scan_equals_naive_oracle(tmp_path_factory, byte_tokenizer_json, samples, lines, n, skip, unit_bytes):
    folder = tmp_path_factory.mktemp("corpus")
    text = "\n".join(lines)
    (folder / "c.txt").write_text(text)
    table, found = _byte_scan(folder, samples, byte_tokenizer_json, (n, n + 3), skip, unit_bytes)
    for length in (n, n + 3):
        rows = table[table.min_length == length]
        for sample, row in zip(samples, rows.itertuples(), strict=True):
            if len(sample) < length:  # too short to hold a span: reported so, not as clean
                assert not row.detectable and not (row.clean or row.not_clean or row.dirty or row.not_dirty)
                continue
            fraction, longest = _naive(sample, [text], length, skip)
            assert (row.contaminated_fraction, row.longest_span) == (pytest.approx(fraction), longest)
            if longest and not skip:  # the location holds the longest span
                start = row.longest_offset
                assert any(
                    text.encode()[start : start + longest] == sample.encode()[a : a + longest] for a in range(14)
                )
    assert sum(found.tokens.values()) == len(text.encode())  # overlaps counted once


def test_a_match_straddling_every_cut_equals_the_naive_oracle(tmp_path, byte_tokenizer_json):
    """A copy with four substitutions past its first ten tokens in a corpus with no line break, cut into units so
    that the first cut falls at every byte of the copy in turn: the oracle's result at every cut."""
    rng = np.random.default_rng(7)
    sample = "".join(rng.choice(list("cdefgh"), 60))
    copy = list(sample)
    for position in (15, 27, 38, 50):
        copy[position] = "z"
    before, after = "".join(rng.choice(list("xy"), 100)), "".join(rng.choice(list("xy"), 100))
    text = before + "".join(copy) + after
    (tmp_path / "c.txt").write_text(text)
    expected = {length: _naive(sample, [text], length, 4) for length in (10, 30)}
    assert expected[10] == (1.0, 60)  # the whole copy is one span
    for cut in range(len(before) + 1, len(before) + len(copy)):
        table, _ = _byte_scan(tmp_path, [sample], byte_tokenizer_json, (10, 30), 4, unit_bytes=cut)
        got = {row.min_length: (row.contaminated_fraction, row.longest_span) for row in table.itertuples()}
        assert got == expected, f"first cut at byte {cut}"


def test_scan_on_worker_processes_equals_one_process(tmp_path, byte_tokenizer_json):
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abc \n"), 3000)) for _ in range(2)]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
    samples = [texts[0][100:160], texts[1][2000:2100], "abcabcabcabcabc"]
    eval_samples = _byte_samples(samples, byte_tokenizer_json)
    index = SampleIndex([s.tokens for s in eval_samples], (8,), skip_budget=0)
    units = [u for i in range(2) for u in corpus.units(tmp_path / f"{i}.txt", 100, 500)]
    one = contamination_rows(eval_samples, scan(units, byte_tokenizer_json, index, "text", 1), index)["t"]
    two = contamination_rows(eval_samples, scan(units, byte_tokenizer_json, index, "text", 2), index)["t"]
    pd.testing.assert_frame_equal(one, two)
    assert list(one.contaminated_fraction[:2]) == [1.0, 1.0]
    for row, sample in zip(one.itertuples(), samples, strict=True):
        assert (row.contaminated_fraction, row.longest_span) == pytest.approx(_naive(sample, texts, 8))


# --- planted copies of real documents -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory, data_dir):
    """cnndm (40 articles) and wmt22 (40 segments) against a corpus of unrelated text holding, in a text file,
    cnndm #1 verbatim, the first half of #3, #5 with five words changed and #7 split by a line break, and in a
    JSONL file the raw source and reference of wmt22 #3 (no template words)."""
    from llamabench.contamination.samples import task_texts

    root = tmp_path_factory.mktemp("planted")
    cnndm = {s.doc_id: s.text for s in task_texts(["cnndm"], data_dir=data_dir, limit=40)}
    ids = list(cnndm)
    texts = [cnndm[ids[i]] for i in (1, 3, 5, 7)]
    half = texts[1].rindex(" ", 0, len(texts[1]) // 2)
    words = texts[2].split(" ")
    for position in range(1, 6):
        words[position * len(words) // 6] = "zebra"
    changed = " ".join(words)
    middle = texts[3].index(" ", len(texts[3]) // 2)
    split = texts[3][:middle] + "\n" + texts[3][middle:]
    unrelated = (data_dir / "wikitext2_raw_test" / "wiki.test.raw").read_text()[:60000]
    pieces = [unrelated[:20000], texts[0], unrelated[20000:40000], texts[1][:half], changed, split, unrelated[40000:]]
    (root / "corpus").mkdir()
    (root / "corpus" / "web.txt").write_text("\n".join(pieces))
    wmt = [json.loads(line) for line in (data_dir / "wmt22_generaltest_de-en" / "test.jsonl").open()][:40]
    records = [{"text": "unrelated line of text"}, {"text": wmt[3]["source"] + " " + wmt[3]["reference"]}]
    (root / "corpus" / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["contamination", "--corpus", str(root / "corpus"), "--tasks", "cnndm,bleu", "--limit", "40", "--exact"]
    argv += ["--lengths", "11"]  # exact match of 11 tokens or more: the assertions below count the lost words
    assert main([*argv, "--data-dir", str(data_dir), "--output-dir", str(root / "out"), "--workers", "2"]) == 0
    (folder,) = (root / "out").iterdir()
    tables, manifest = read_contamination(folder)
    return {"ids": ids, "half": half, "texts": texts, "tables": tables, "manifest": manifest, "root": root}


def test_planted_documents_found_with_their_fractions_and_subsets(planted):
    cnndm = planted["tables"]["cnndm"].set_index("doc_id")
    ids = planted["ids"]
    verbatim, partly, changed, split = (cnndm.loc[ids[i]] for i in (1, 3, 5, 7))
    assert verbatim.contaminated_fraction == 1.0 and verbatim.dirty
    assert verbatim.longest_span == verbatim.n_tokens
    # The first half by characters: about half the tokens, not clean and not dirty.
    share = planted["half"] / len(planted["texts"][1])
    assert partly.contaminated_fraction == pytest.approx(share, abs=0.03)
    assert partly.not_clean and partly.not_dirty
    # Five words changed: only their own tokens are lost (each stretch between them is longer than 11 tokens).
    assert 0.97 < changed.contaminated_fraction < 1.0 and changed.dirty
    assert changed.longest_span < changed.n_tokens / 4
    # A line break inserted between two words: every token is still found, in two runs.
    assert split.contaminated_fraction == 1.0 and split.dirty
    assert split.n_tokens / 3 < split.longest_span < split.n_tokens
    others = cnndm.drop(index=[ids[i] for i in (1, 3, 5, 7)])
    assert (others.contaminated_fraction == 0).all() and others.clean.all()
    # wmt22 #3 as raw fields in a JSONL record: all of its own tokens, though the template's words are absent,
    # but the first: " Die" after "German:" in the prompt, "Die" at the start of the record.
    bleu = planted["tables"]["wmt22-de-en"]
    own = bleu.n_tokens.iloc[3]
    assert bleu.contaminated_fraction.iloc[3] == (own - 1) / own and bleu.dirty.iloc[3]
    assert (bleu.drop(index=3).contaminated_fraction == 0).all()


def test_planted_locations_and_manifest(planted):
    cnndm = planted["tables"]["cnndm"].set_index("doc_id")
    verbatim = cnndm.loc[planted["ids"][1]]
    web = planted["root"] / "corpus" / "web.txt"
    assert verbatim.longest_file == str(web)
    text = planted["texts"][0].encode()
    assert web.read_bytes()[verbatim.longest_offset :].startswith(text)
    bleu = planted["tables"]["wmt22-de-en"].iloc[3]
    assert bleu.longest_file.endswith("sft.jsonl")
    sft = (planted["root"] / "corpus" / "sft.jsonl").read_bytes()
    assert int(bleu.longest_record) == sft.index(b"\n") + 1  # the second line's byte offset
    # The run starts inside the first word, which the record (no space before it) cuts into other tokens.
    source = json.loads(sft.splitlines()[1])["text"]
    assert 0 < bleu.longest_offset < source.index(" ")
    manifest = planted["manifest"]
    assert (manifest["settings"]["lengths"], manifest["settings"]["skip_budget"]) == ([11], 0)
    files = {Path(item["path"]).name: item for item in manifest["corpus"]}
    import blake3

    assert files["web.txt"]["blake3"] == blake3.blake3(web.read_bytes()).hexdigest()
    assert files["sft.jsonl"]["tokens"] > 0 and files["web.txt"]["tokens"] > 10000
    assert manifest["tasks"]["cnndm"]["documents"] == 40


def test_bad_input_is_one_line(capsys, tmp_path, data_dir):
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    base = ["contamination", "--tasks", "bleu", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o")]
    assert "does not exist" in cli_error(capsys, *base, "--corpus", str(tmp_path / "missing.txt"))
    assert "no text field 'text'" in cli_error(capsys, *base, "--corpus", str(tmp_path / "bad.jsonl"))
    assert "matches no file" in cli_error(capsys, *base, "--corpus", str(tmp_path / "*.parquet"))
    (tmp_path / "c.txt").write_text("hello")
    assert "--lengths" in cli_error(capsys, *base, "--corpus", str(tmp_path / "c.txt"), "--lengths", "0,10")
    assert "unknown task" in cli_error(capsys, *base[:1], "--tasks", "nope", "--corpus", str(tmp_path / "c.txt"))


def test_skip_budget_joins_the_changed_copy(planted, data_dir):
    from llamabench.contamination.result import ScanSettings, contamination_tables

    corpus_dir = str(planted["root"] / "corpus")
    settings = ScanSettings([corpus_dir], ["cnndm"], data_dir=data_dir, limit=8, lengths=(11,))
    tables, manifest = contamination_tables(settings)
    changed = tables["cnndm"].set_index("doc_id").loc[planted["ids"][5]]
    exact = planted["tables"]["cnndm"].set_index("doc_id").loc[planted["ids"][5]]
    # A changed word of as many tokens as the original now lies inside a span (at most four changes each); one
    # of another length shifts the alignment, which a skip (a substitution) cannot bridge.
    assert changed.contaminated_fraction > exact.contaminated_fraction and changed.longest_span > exact.longest_span
    assert manifest["settings"]["skip_budget"] == 4


def test_parquet_corpus_rows_and_bad_fields(tmp_path, byte_tokenizer_json, capsys, data_dir):
    rows = ["nothing here", "xx the quick brown fox jumps", "the quick brown"]
    pd.DataFrame({"body": rows}).to_parquet(tmp_path / "c.parquet", row_group_size=2)
    eval_samples = _byte_samples(["the quick brown fox"], byte_tokenizer_json)
    index = SampleIndex([s.tokens for s in eval_samples], (6,), skip_budget=0)
    units = corpus.units(tmp_path / "c.parquet", 0)
    assert len(units) == 2  # one per row group
    row = contamination_rows(eval_samples, scan(units, byte_tokenizer_json, index, "body", 1), index)["t"].iloc[0]
    assert (row.contaminated_fraction, row.longest_span) == (1.0, 19)
    assert (row.longest_record, row.longest_offset) == (1, 3)  # row 1, from its fourth character
    base = ["contamination", "--tasks", "bleu", "--data-dir", str(data_dir), "--corpus", str(tmp_path / "c.parquet")]
    assert "has no column 'text'" in cli_error(capsys, *base)
    (tmp_path / "later.jsonl").write_text('{"text": "fine"}\nnot json\n')
    assert "line at byte 17 is not JSON" in cli_error(capsys, *base[:-1], str(tmp_path / "later.jsonl"))


# --- the test set as distributed, undetectable documents, non-regular files ----------------------------------


def test_the_raw_wikitext_test_file_as_corpus_is_dirty(tmp_path, data_dir):
    """The file the task reads, scanned as a corpus: every article is found whole in its raw form (the task's
    rendered text is detokenised, so it alone is not)."""
    from llamabench.contamination.result import ScanSettings, contamination_tables

    raw = data_dir / "wikitext2_raw_test" / "wiki.test.raw"
    tables, _ = contamination_tables(ScanSettings([str(raw)], ["wikitext2"], data_dir=data_dir, limit=8))
    table = tables["wikitext2"]
    assert sorted(set(table.min_length)) == [10, 20, 30, 40, 50]
    assert len(table) == 5 * 8 and table.detectable.all()
    # All but a token or two of each article's thousands (the whitespace at its end, tokenised with what follows).
    assert table.dirty.all() and (table.contaminated_fraction > 0.999).all()
    assert (table.form == "record:page").all()


def test_planted_paragraph_with_four_substitutions_found_by_default_missed_exactly(tmp_path, data_dir):
    """A cnndm article planted with four words changed past its first ten tokens (" the" -> " a", one token each
    under SmolLM2): the paper's budget joins it whole; exact match loses the changed tokens' neighbourhoods."""
    from llamabench.contamination.result import ScanSettings, contamination_tables
    from llamabench.contamination.samples import task_texts

    (article,) = [s for s in task_texts(["cnndm"], data_dir=data_dir, limit=2) if s.form == "prompt"][1:2]
    text = article.text
    words = text.split(" ")
    the = [i for i, word in enumerate(words) if word == "the" and i > 20]
    picks = the[: len(the) // 4 * 4 : max(1, len(the) // 4)][:4]
    assert len(picks) == 4
    for i in picks:
        words[i] = "a"
    unrelated = (data_dir / "wikitext2_raw_test" / "wiki.test.raw").read_text()[:20000]
    (tmp_path / "web.txt").write_text(unrelated + "\n" + " ".join(words) + "\n" + unrelated)
    found = {}
    for budget in (4, 0):
        settings = ScanSettings([str(tmp_path / "web.txt")], ["cnndm"], data_dir=data_dir, limit=2, skip_budget=budget)
        tables, _ = contamination_tables(settings)
        row = tables["cnndm"].query("min_length == 10").set_index("doc_id").loc[article.doc_id]
        found[budget] = (row.contaminated_fraction, row.longest_span, row.n_tokens)
    fraction, longest, n_tokens = found[4]
    assert fraction == 1.0 and longest == n_tokens
    assert found[0][0] < 1.0 and found[0][1] < n_tokens / 2


def test_short_documents_are_undetectable_not_clean(tmp_path, capsys, data_dir):
    notes = tmp_path / "notes.txt"
    notes.write_text("Bring the slides.\n" + "word " * 30 + "\n")  # 4 and about 30 tokens
    (tmp_path / "corpus.txt").write_text("nothing of the notes here\n")
    out = tmp_path / "out"
    argv = ["contamination", "--corpus", str(tmp_path / "corpus.txt"), "--text", str(notes)]
    assert main([*argv, "--text-format", "lines", "--output-dir", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "L=10: 2 documents; clean 1, not_clean 0, not_dirty 1, dirty 0; undetectable 1" in printed
    assert "L=50: 2 documents; clean 0, not_clean 0, not_dirty 0, dirty 0; undetectable 2" in printed
    (folder,) = out.iterdir()
    tables, manifest = read_contamination(folder)
    ((task, summary),) = manifest["tasks"].items()
    assert summary["undetectable"] == {"10": 1, "20": 1, "30": 1, "40": 2, "50": 2}
    short = tables[task][tables[task].doc_id == tables[task].doc_id.iloc[0]]
    assert not short.detectable.any() and not short[["clean", "not_clean", "not_dirty", "dirty"]].any().any()
    assert sorted(summary["files"]) == ["10", "20", "30", "40", "50"]
    assert all((folder / f"{stem}.csv").is_file() for stem in summary["files"].values())


def test_a_fifo_in_the_corpus_folder_is_refused(tmp_path, capsys, data_dir):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("some text\n")
    os.mkfifo(folder / "pipe")
    base = ["contamination", "--tasks", "bleu", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o")]
    error = cli_error(capsys, *base, "--corpus", str(folder))
    assert "pipe is not a regular file" in error
    assert "is not a regular file" in cli_error(capsys, *base, "--corpus", str(folder / "pipe"))
