"""Escaping of untrusted text (task and model names, prompts, predictions) for each output format.

Names and sample text come from task files, data sets and models, so any of them may hold markup, spreadsheet
formulas or terminal control sequences. Every writer passes such text through the one function for its format
here, so a hostile name shows up as inert, visible text:

- :func:`terminal` for printed tables, :func:`markdown` for ``leaderboard.md``, :func:`xml_text` for JUnit XML,
  :func:`html_text` and :func:`script_json` for ``leaderboard.html``, :func:`csv_frame` for CSV files.
"""

from __future__ import annotations

import html
import json
import re

import pandas as pd

# C0 controls, DEL, C1 controls, and the Unicode bidirectional overrides and isolates ("Trojan Source"), which
# reorder what a terminal or a code view shows. Each is shown as its Python escape instead.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# XML 1.0 allows tab, newline and carriage return but no other C0 control, no lone surrogate, no U+FFFE/U+FFFF.
_NOT_XML = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Markdown punctuation that can start emphasis, code, links, images, headings, tables or strike-through.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#!|~])")
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _visible(char: str) -> str:
    """``"\\x1b"`` for ESC, ``"\\u202e"`` for RIGHT-TO-LEFT OVERRIDE: the escape Python itself would print."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal(text: object) -> str:
    """Text safe to print to a terminal: control characters and escape sequences become visible escapes.

    >>> terminal("evil\\x1b[2Jname\\n")
    'evil\\\\x1b[2Jname\\\\x0a'
    """
    return _CONTROL.sub(lambda match: _visible(match.group()), str(text))


def markdown(text: object) -> str:
    """Text for a Markdown table cell or heading (GitHub-flavoured): rendered literally, on one line.

    HTML specials become entities, Markdown punctuation is backslash-escaped, newlines become spaces and other
    control characters visible escapes (whose backslash is escaped in turn).

    >>> markdown("a|b <img> [x](y) `z`")
    'a\\\\|b &lt;img&gt; \\\\[x\\\\]\\\\(y\\\\) \\\\`z\\\\`'
    """
    one_line = re.sub(r"[\r\n]+", " ", str(text))
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", terminal(one_line)), quote=False)


def xml_text(text: object) -> str:
    """Text that XML 1.0 can hold (ElementTree escapes ``<``, ``&`` and quotes itself): characters XML forbids,
    such as NUL or ESC, become visible escapes, so the file always parses.

    >>> xml_text("task\\x00\\x1b")
    'task\\\\x00\\\\x1b'
    """
    return _NOT_XML.sub(lambda match: _visible(match.group()), str(text))


def html_text(text: object) -> str:
    """Text for HTML element content or a quoted attribute value.

    >>> html_text('<b title="x">')
    '&lt;b title=&quot;x&quot;&gt;'
    """
    return html.escape(str(text), quote=True)


def script_json(data: object) -> str:
    """JSON that cannot close or open a tag inside ``<script type="application/json">``.

    >>> script_json({"label": "</script>"})
    '{"label": "\\\\u003c/script\\\\u003e"}'
    """
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run as a formula: text starting with ``= + - @``, tab or CR gets a
    leading ``'`` (OWASP's advice); numbers and other values are returned unchanged, so they stay numbers.

    >>> csv_cell("=HYPERLINK(\\"http://x\\")"), csv_cell(-2.5), csv_cell("-2.5")
    ('\\'=HYPERLINK("http://x")', -2.5, "'-2.5")
    """
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` for ``to_csv``: :func:`csv_cell` on its column names and the cells of its text columns
    (numeric columns, such as negative log-likelihoods, are left as numbers)."""
    safe = frame.copy()
    for column in safe.select_dtypes(include=["object", "string"]).columns:
        safe[column] = safe[column].map(csv_cell)
    return safe.rename(columns=csv_cell)


def safe_name(name: str) -> str:
    """A file-name-safe form of a model or task name (no separators, no leading dots)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "unnamed"
