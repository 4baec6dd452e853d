import sys

from llamabench.cli import main

sys.exit(main())
