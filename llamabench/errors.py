"""User-facing errors: one line naming the thing that is wrong and how to fix it."""

import sys


class LlamabenchError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or "" when it has none."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]


def warn(message: str) -> None:
    """A one-line warning on stderr: something was skipped or changed and the user should know."""
    from llamabench.escaping import terminal  # names in warnings are untrusted text

    say(f"llamabench: warning: {terminal(message)}")


def note(message: str) -> None:
    """A one-line note on stderr: how a result came about, nothing the user must act on."""
    from llamabench.escaping import terminal  # names in notes are untrusted text

    say(f"llamabench: note: {terminal(message)}")


def say(line: str) -> None:
    """Write one line to stderr in one write: the ranks of a torchrun job share a stderr, and a print() (text,
    then newline, unbuffered under PYTHONUNBUFFERED) let their lines run together."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
