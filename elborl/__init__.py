"""elborl: RL fine-tuning for text-to-image flow-matching models.

Library layout (see ARCHITECTURE.md section 5): `config` (params.yaml schema), `world` (the embedded
shapes world: spec, prompts, renderer), `rewards` (GenEval rules, detectors, rewards), `geneval_io`
(GenEval's folder layout).
"""

__version__ = "0.1.0"
