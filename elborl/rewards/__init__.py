"""Rewards: GenEval's rules (`geneval`), detectors (`detectors`) and folder scoring (`scoring`)."""
