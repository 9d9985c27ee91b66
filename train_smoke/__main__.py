"""`python -m train_smoke SHARDS ...`: `m3w smoke` without Apache Beam or the rest of the pipeline."""

import sys

from train_smoke.cli import main

sys.exit(main())
