"""elborl: RL fine-tuning for text-to-image flow-matching models.

Library layout (see docs/ARCHITECTURE.md section 5): `config` (params.yaml schema), `world` (the embedded
shapes world: spec, prompts, renderer), `rewards` (GenEval rules, detectors, rewards), `geneval_io`
(GenEval's folder layout).
"""

import os

# Weights load from local paths only: never reach for a model hub, and keep its progress bars quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
