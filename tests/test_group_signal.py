"""bench/group_signal.py: the share of prompt groups whose rewards can produce a non-zero advantage."""

from __future__ import annotations

import numpy as np
import pytest

from bench.group_signal import group_signal


def test_group_signal_counts_groups_with_spread_and_mixed_verdicts():
    rewards = np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.0, 0.5, 0.5]])
    correct = rewards == 1.0
    s = group_signal(rewards, correct)
    assert s["spread"] == 0.5  # groups 3 and 4: the first two teach nothing
    assert s["mixed"] == 0.25  # only group 3 has a correct and a wrong image
    assert s["accuracy"] == pytest.approx(4 / 12) and s["reward"] == pytest.approx(np.mean(rewards))
    assert s["std"] == pytest.approx(np.mean([0, 0, np.std([0.5, 1, 0.5]), np.std([0, 0.5, 0.5])]))
