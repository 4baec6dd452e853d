"""lm-eval's command line with the ``llamabench`` model registered.

``python -m llamabench.interop.lm_eval.cli run --model llamabench --model_args pretrained=DIR --tasks hellaswag``

lm-eval's own default device is ``cuda:0`` whatever the machine has; without ``--device`` this wrapper asks for
the CPU when no GPU is visible (and ``cuda`` when one is), as ``llamabench run`` does.
"""

import sys

from lm_eval.__main__ import cli_evaluate

import llamabench.interop.lm_eval.model  # noqa: F401  (registers the "llamabench" model)


def with_visible_device(argv: list[str]) -> list[str]:
    """``argv`` with ``--device`` set to the visible device unless it names one already."""
    if any(arg == "--device" or arg.startswith("--device=") for arg in argv):
        return argv
    import torch

    return [*argv, "--device", "cuda" if torch.cuda.is_available() else "cpu"]


if __name__ == "__main__":
    sys.argv = with_visible_device(sys.argv)
    cli_evaluate()
