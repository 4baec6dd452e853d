import sys

from llamabench.cli.app import main

sys.exit(main())
