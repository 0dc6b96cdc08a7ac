"""The HELM paper's entry point: `python train.py --model_name gpt2 ...` (every seed flag works)."""

import sys

from helm.train import main

sys.exit(main())
