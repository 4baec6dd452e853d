"""Jinja2 prompt templates, rendered in a sandbox with undefined fields as errors."""

from __future__ import annotations

import ast
import re
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, UndefinedError
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


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["wikitext_detokenize"] = wikitext_detokenize
    return env


_ENV = _environment()


@lru_cache(maxsize=512)
def compile_template(source: str):
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise LlamabenchError(f"template {source!r} does not parse: {exc}") from exc


def render(source: str, doc: dict) -> str:
    """Render ``source`` against one document; a missing field raises :class:`UndefinedError`."""
    return compile_template(source).render(**doc)


def render_list(sources: str | list[str], doc: dict) -> list[str]:
    """Render a list-valued field: a list of templates, or one template that yields a list literal."""
    if isinstance(sources, list):
        return [render(source, doc) for source in sources]
    text = render(sources, doc)
    if text.startswith("[") and text.endswith("]"):
        value = ast.literal_eval(text)
        return [str(item) for item in value]
    return [text]


__all__ = ["UndefinedError", "render", "render_list", "wikitext_detokenize"]
