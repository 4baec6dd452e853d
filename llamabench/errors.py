"""User-facing errors: one line naming the thing that is wrong and how to fix it."""


class LlamabenchError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""
