"""Held-out text as users have it: plain-text formats, data-dir containment, the --text quick path, word rules."""

import json

import pytest

from llamabench.tasks.data import read_jsonl, read_wikitext_documents

WIKITEXT = (
    " = Alpha = \n \n Alpha is first . \n \n = = History = = \n \n Old . \n"
    " = Beta = \n \n Beta is second . \n"
    " = Gamma = \n \n Gamma is third . \n"
)


def test_jsonl_line_may_hold_a_raw_line_separator_inside_a_string(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = ["one\u2028two", "three\u2029four\x0cfive\x85six"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [row["text"] for row in read_jsonl(path)] == texts


def test_jsonl_tolerates_crlf(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert read_jsonl(path) == [{"text": "a"}, {"text": "b"}]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_wikitext_with_crlf_or_cr_gives_the_same_articles(tmp_path, newline):
    (tmp_path / "lf.raw").write_bytes(WIKITEXT.encode())
    (tmp_path / "other.raw").write_bytes(WIKITEXT.replace("\n", newline).encode())
    lf = read_wikitext_documents(tmp_path / "lf.raw")
    assert [page["page"].splitlines()[0] for page in lf] == [" = Alpha = ", " = Beta = ", " = Gamma = "]
    assert read_wikitext_documents(tmp_path / "other.raw") == lf
