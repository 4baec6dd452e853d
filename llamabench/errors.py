"""User-facing errors: one line naming the thing that is wrong and how to fix it."""

import sys


class LlamabenchError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, or "" when it has none. A longer line than ``limit`` characters is
    cut between words (never inside a URL or a path) and ends in `` [...]``, so the cut shows."""
    line = (str(exc).strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[: limit - len(" [...]") + 1].rsplit(" ", 1)[0].rstrip() + " [...]"


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


# How the hub clients (huggingface_hub, datasets, requests) name a failure to reach the network or an offline mode.
_NETWORK_ERRORS = ("ConnectionError", "Timeout", "OfflineModeIsEnabled", "LocalEntryNotFoundError")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a hub client failing to reach the network."""
    while exc is not None:
        if any(name in cls.__name__ for cls in type(exc).__mro__ for name in _NETWORK_ERRORS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def network_advice() -> str:
    """What to do when the hub cannot be reached: the network, HF_HUB_OFFLINE, or a local copy."""
    import os

    offline = [name for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(name, "") not in ("", "0")]
    state = f"{' and '.join(offline)} is set, so nothing is fetched" if offline else "the hub could not be reached"
    return (
        f"hub ids and hub datasets are fetched over the network (huggingface.co) unless already in the local hub "
        f"cache, and {state}: connect to the network and unset HF_HUB_OFFLINE, or pass a local copy "
        "(a model folder or .gguf for --model, --data-dir for task data)"
    )
