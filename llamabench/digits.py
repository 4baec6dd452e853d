"""Whole numbers written in ASCII digits, as flags, environment variables and names give them.

``str.isdigit()`` is True for superscripts and other scripts' digits (``'²'``, ``'١'``) and ``int()`` takes some of
them (``int('١')`` is 1) and raises on others (``int('²')``), so text is read as a number only through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from llamabench.errors import LlamabenchError

_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str) -> int | None:
    """The whole number ``text`` spells in ASCII digits (surrounding whitespace allowed), else None."""
    stripped = text.strip()
    return int(stripped) if _DIGITS.fullmatch(stripped) else None


def environment_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """The whole number in the environment variable ``name`` (``default`` when unset); one line naming it
    otherwise."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return default
    number = ascii_int(value)
    if number is None:
        raise LlamabenchError(f"{name}={value!r} is not a whole number in ASCII digits; set it to one, or unset it")
    return number
