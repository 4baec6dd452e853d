"""`llamabench` under torchrun, with rank 1's scoring broken (as a GPU that runs out of memory would break it):
test_distributed.py checks that every rank stops with the same one line instead of waiting for rank 1.

    python -m torch.distributed.run --nproc-per-node 2 tests/rank_cli.py run --model ... --tasks ...
"""

import os
import sys

from llamabench.backends.hf.backend import HFBackend
from llamabench.cli.app import main


def broken(self, items):
    raise RuntimeError("scoring failed on this rank (simulated)")


if __name__ == "__main__":
    if os.environ["RANK"] == "1":
        HFBackend._score_batch = broken
    sys.exit(main(sys.argv[1:]))
