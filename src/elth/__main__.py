"""`python -m elth ...`: the `elth` command (what torchrun starts on every rank: `torchrun ... -m elth`)."""
import sys

from elth.cli import main

sys.exit(main())
