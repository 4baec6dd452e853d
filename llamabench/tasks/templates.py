"""Jinja2 prompt templates, rendered in a sandbox with undefined fields as errors."""

from __future__ import annotations

import math
import re
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, Undefined, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llamabench.errors import LlamabenchError


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenisation (" @-@ " escapes, spaced punctuation), with lm-eval's rules."""
    for old, new in (("s '", "s'"), (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
        text = text.replace(old, new)
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for mark in ":;.!?,":
        text = text.replace(f" {mark} ", f"{mark} ")
    for pattern, replacement in (
        (r"\(\s*([^\)]*?)\s*\)", r"(\1)"),
        (r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
        (r"{\s*([^}]*?)\s*}", r"{\1}"),
        (r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
        (r"'\s*([^']*?)\s*'", r"'\1'"),
    ):
        text = re.sub(pattern, replacement, text)
    for old, new in (
        ("= = = =", "===="),
        ("= = =", "==="),
        ("= =", "=="),
        (" \u00b0 ", "\u00b0"),
        (" \n", "\n"),
        ("\n ", "\n"),
        (" N ", " 1 "),
        (" 's", "'s"),
    ):
        text = text.replace(old, new)
    return text


class NullValueError(TemplateError):
    """A template turned a null (``None``) or NaN value into text: a missing answer or text, never "None"."""


class _Null:
    """A null or NaN from the data, as templates see it: false in a test, so ``{{ x or '' }}`` gives "", and an
    error wherever it would become text (printed, joined, trimmed, concatenated with ``~``)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        raise NullValueError("a field the template uses is null")

    def __repr__(self) -> str:
        return "null"


_NULL = _Null()


def _nulls_marked(value):
    """``value`` with every None and NaN inside it replaced by the null marker."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NULL
    if isinstance(value, dict):
        return {key: _nulls_marked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nulls_marked(item) for item in value]
    return value


def _printable(value):
    """What ``{{ ... }}`` may print: text and numbers; a null is an error, and so is a list or mapping, whose
    Python spelling would become the prompt or the answer."""
    if isinstance(value, _Null):
        raise NullValueError("a field the template prints is null")
    if isinstance(value, dict | list | tuple):
        raise TypeError(
            f"a template prints a {type(value).__name__} as text ({str(value)[:60]}); join it (| join(', ')) or, "
            'for a list of answers, write the field alone: target: "{{ field }}"'
        )
    return value


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, finalize=_printable)
    env.filters["wikitext_detokenize"] = wikitext_detokenize
    return env


_ENV = _environment()


@lru_cache(maxsize=512)
def compile_template(source: str):
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise LlamabenchError(f"template {source!r} does not parse: {exc}") from exc


_SINGLE_EXPRESSION = re.compile(r"\A\{\{-?(?P<expr>.*?)-?\}\}\Z", re.DOTALL)


@lru_cache(maxsize=512)
def _single_expression(source: str):
    """The compiled expression of a template that is exactly one ``{{ expression }}``, else None."""
    match = _SINGLE_EXPRESSION.match(source)  # whitespace around the braces is text: not a single expression
    if match is None:
        return None
    try:
        body = _ENV.parse(source).body
    except TemplateError as exc:
        raise LlamabenchError(f"template {source!r} does not parse: {exc}") from exc
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    if isinstance(body[0].nodes[0], nodes.TemplateData):
        return None
    return _ENV.compile_expression(match.group("expr"), undefined_to_none=False)


def render(source: str, doc: dict) -> str:
    """Render ``source`` against one document; a missing field raises :class:`UndefinedError`, a null one
    :class:`NullValueError`."""
    return compile_template(source).render(**_nulls_marked(doc))


def render_list(sources: str | list[str], doc: dict) -> list[str]:
    """Render a list-valued field (targets, choices). Lists come from structure, never from text:

    - a YAML list of templates gives one item per template;
    - a template that is exactly one ``{{ expression }}`` whose value is a list (e.g. ``{{ answers }}`` with
      ``"answers": ["Paris", "paris"]`` in the data) gives that list's items;
    - anything else gives one item, the rendered text, even when it looks like a list (``"[1, 2]"`` stays a
      single answer).

    Items must be strings or numbers (numbers are written as in the data); a null item raises
    :class:`NullValueError`, any other type :class:`TypeError`.
    """
    if isinstance(sources, list):
        return [render(source, doc) for source in sources]
    expression = _single_expression(sources)
    if expression is None:
        return [render(sources, doc)]
    value = expression(**_nulls_marked(doc))
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, list | tuple):
        return [_list_item(item) for item in value]
    return [str(_printable(value))]  # what rendering the template prints, without evaluating it a second time


def _list_item(item) -> str:
    if isinstance(item, _Null):
        raise NullValueError("a list item is null")
    if isinstance(item, str):
        return item
    if isinstance(item, int | float) and not isinstance(item, bool):
        return str(item)
    raise TypeError(f"a list item is a {type(item).__name__} ({item!r}), not text")


__all__ = ["NullValueError", "UndefinedError", "render", "render_list", "wikitext_detokenize"]
