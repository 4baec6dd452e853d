"""lm-eval's command line with the ``llamabench`` model registered.

``python -m llamabench.interop.lm_eval.cli run --model llamabench --model_args pretrained=DIR --tasks hellaswag``
"""

from lm_eval.__main__ import cli_evaluate

import llamabench.interop.lm_eval.model  # noqa: F401  (registers the "llamabench" model)

if __name__ == "__main__":
    cli_evaluate()
