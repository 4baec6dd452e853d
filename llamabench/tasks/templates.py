"""Jinja2 prompt templates, rendered in a sandbox with undefined fields as errors."""

from __future__ import annotations

import functools
import math
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


class NotTextError(TemplateError):
    """A template rendered a lone surrogate: no character, so no tokenizer or file could take the prompt."""


_SURROGATE = re.compile("[\ud800-\udfff]")


class TooMuchTextError(TemplateError):
    """Rendering went past its budget of characters (see :func:`text_budget`)."""


class TooMuchWorkError(TemplateError):
    """Rendering one document ran past :data:`RENDER_SECONDS` (see :func:`time_limit`)."""


# Seconds the templates of one document may run. An ordinary prompt renders in microseconds; a loop that prints
# nothing (ranges nested in ranges, loops over the characters of a text nested three deep) is bounded by no
# count of text, so it is bounded by time: stopped here instead of running for hours before any model loads.
RENDER_SECONDS = 10.0


@contextmanager
def time_limit() -> Iterator[None]:
    """Within the block, raise :class:`TooMuchWorkError` once :data:`RENDER_SECONDS` have passed. Needs the main
    thread and a free real-time timer (POSIX ``setitimer``); elsewhere the block runs unbounded in time, bounded
    in text as always."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # someone else's timer runs: leave it be
        yield
        return
    seconds = RENDER_SECONDS

    def expire(signum, frame):
        raise TooMuchWorkError(f"its templates ran for more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Characters templates may still produce; a one-item list so that rendering can spend it. Without a budget set,
# one expression may still not build more than ``_UNBUDGETED_ROOM`` characters (``"x" * 10 ** 12``).
_BUDGET: ContextVar[list[int] | None] = ContextVar("template_text_budget", default=None)
_UNBUDGETED_ROOM = 1 << 26


@contextmanager
def text_budget(chars: int) -> Iterator[None]:
    """Within the block, everything :func:`render` and :func:`render_list` produce (and what :func:`spend`
    records) may total at most ``chars`` characters; past it they raise :class:`TooMuchTextError`, as soon as
    the text is produced, not after it has filled the memory."""
    token = _BUDGET.set([chars])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def spend(chars: int) -> None:
    """Count ``chars`` characters against the current budget (none set: nothing to count)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget[0] -= chars
        if budget[0] < 0:
            raise TooMuchTextError("the rendered text passes its budget")


def _room() -> int:
    budget = _BUDGET.get()
    return _UNBUDGETED_ROOM if budget is None else budget[0]


def _check_room(chars: int, what: str) -> None:
    if chars > _room():
        raise TooMuchTextError(f"{what} would build {chars} characters")


def _ints(values) -> list[int]:
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _replaced_size(text, old, new) -> int:
    """At most how long ``text.replace(old, new)`` is (an empty ``old`` inserts ``new`` between all characters)."""
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    count = len(text) + 1 if not old else text.count(old)
    return len(text) + count * len(new)


# Widths written in a format string: "%1000000000s" and "{:>1000000000}" (not other numbers in the text).
_PERCENT_WIDTH = re.compile(r"%[-+ #0]*(\d+)")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}\d]*(\d+)[^{}]*\}")

# str methods that build text whose length a width argument sets.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, refusing a single step that would build more text than the budget has room for, before it
    fills the memory (streaming catches only what is printed, after each step): ``text * 10 ** 9``, ``"%*s" %
    (10 ** 9, "")``, ``text.center(10 ** 9)``, chained ``replace``; and ``**`` of unbounded size."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator: str, left, right):
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    _check_room(len(sequence) * count, "'*'")
        if operator == "**" and isinstance(right, int) and isinstance(left, int) and abs(right) > 4096:
            raise TooMuchTextError(f"'**' with an exponent of {right}")
        if operator == "%" and isinstance(left, str):
            widths = [int(width) for width in _PERCENT_WIDTH.findall(left)]
            if "*" in left:  # widths taken from the arguments
                widths += _ints(right if isinstance(right, tuple) else [right])
            _check_room(max(widths, default=0), "'%' formatting")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805  (Jinja's own signature)
        # The sandbox hands out str.format wrapped; the wrapper keeps the method as __wrapped__.
        method = getattr(__obj, "__wrapped__", __obj)
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                for width in _ints([*args, *kwargs.values()]):
                    _check_room(width, f"str.{name}")
            if name == "replace" and len(args) >= 2:
                _check_room(_replaced_size(owner, args[0], args[1]), "str.replace")
            if name in ("format", "format_map"):  # a width in a replacement field: "{:>1000000000}"
                _check_room(max(map(int, _FORMAT_WIDTH.findall(owner)), default=0), f"str.{name}")
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filter(name: str, size):
    """Jinja's filter ``name``, refusing first when ``size(*args)`` says its result would not fit the budget."""
    original = _FILTERS[name]
    passes_context = getattr(original, "jinja_pass_arg", None) is not None  # e.g. replace takes the eval context

    @functools.wraps(original)  # keeps the mark that makes Jinja pass that context
    def bounded(*args, **kwargs):
        _check_room(size(*args[passes_context:], **kwargs), f"the {name} filter")
        return original(*args, **kwargs)

    return bounded


def _indented_size(text="", width=4, *args, **kwargs) -> int:
    width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return len(str(text)) + (str(text).count("\n") + 1) * width


from jinja2.filters import FILTERS as _FILTERS  # noqa: E402  (beside its only use)

_SIZED_FILTERS = {
    "replace": lambda text="", old="", new="", *args, **kwargs: _replaced_size(str(text), old, new),
    "center": lambda text="", width=80, *args, **kwargs: width if isinstance(width, int) else 0,
    "indent": _indented_size,
    "format": lambda text="", *args, **kwargs: max(_ints([*args, *kwargs.values()]), default=0),
}


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(undefined=StrictUndefined, keep_trailing_newline=True, finalize=_printable)
    env.filters["wikitext_detokenize"] = wikitext_detokenize
    for name, size in _SIZED_FILTERS.items():
        env.filters[name] = _bounded_filter(name, size)
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
    template = compile_template(source)
    pieces = []
    # Streamed and counted piece by piece: a loop that multiplies text stops at its budget, not at the memory's.
    for piece in template.generate(**_nulls_marked(doc)):
        spend(len(piece))
        if _SURROGATE.search(piece):  # e.g. a "\\ud800" escape in a template's string literal
            raise NotTextError("a template renders a lone surrogate (an unpaired \\ud800-\\udfff), which is not text")
        pieces.append(piece)
    return "".join(pieces)


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
    items = [_list_item(item) for item in value] if isinstance(value, list | tuple) else [str(_printable(value))]
    spend(sum(map(len, items)))
    return items  # what rendering the template prints, without evaluating it a second time


def _list_item(item) -> str:
    if isinstance(item, _Null):
        raise NullValueError("a list item is null")
    if isinstance(item, str):
        return item
    if isinstance(item, int | float) and not isinstance(item, bool):
        return str(item)
    raise TypeError(f"a list item is a {type(item).__name__} ({item!r}), not text")


__all__ = [
    "NullValueError",
    "TooMuchTextError",
    "TooMuchWorkError",
    "UndefinedError",
    "render",
    "render_list",
    "spend",
    "text_budget",
    "time_limit",
    "wikitext_detokenize",
]
