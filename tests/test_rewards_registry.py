"""The reward registry: names and mixes, the weighted sum, failures that stop an epoch before its update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elborl.config import Params, TrainConfig
from elborl.errors import UserError
from elborl.models.tiny import TinyT2I, tiny_policy
from elborl.rewards import registry
from elborl.rewards.detectors import build_detector
from elborl.rewards.registry import RewardContext, RewardError, RewardMix, RewardResult, reward_weights
from elborl.train import Trainer
from elborl.world.prompts import make_prompt_sets
from tests.conftest import ROOT


def test_names_aliases_and_unknown_names():
    assert reward_weights("geneval") == {"geneval": 1.0}
    assert reward_weights("partial") == {"geneval": 1.0} and reward_weights("strict") == {"geneval_strict": 1.0}
    assert reward_weights({"pickscore": 1.0, "hpsv2": 0.5}) == {"pickscore": 1.0, "hpsv2": 0.5}
    with pytest.raises(ValueError, match=r"expected one of geneval, geneval_strict, pickscore, .*found 'pikscore'"):
        reward_weights({"pikscore": 1.0})
    with pytest.raises(UserError, match=r"train.reward: expected one of .*found 'nope'"):
        from elborl.config import parse_params

        parse_params({"train": {"reward": "nope"}}, "p.yaml")


def _fake(value: float | list[float]):
    def factory(ctx):
        def fn(images, metadata):
            return RewardResult(np.broadcast_to(np.asarray(value, float), (len(images),)).copy())

        return fn

    return factory


def test_a_mix_is_the_weighted_sum_of_its_parts(monkeypatch):
    monkeypatch.setitem(registry.REWARDS, "a", _fake([0.2, 0.4, 1.0]))
    monkeypatch.setitem(registry.REWARDS, "b", _fake([1.0, 0.0, 0.5]))
    images, meta = np.zeros((3, 8, 8, 3), np.uint8), [{"prompt": "x"}] * 3
    total, parts = RewardMix({"a": 2.0, "b": -0.5}, RewardContext(Params().rewards))(images, meta)
    np.testing.assert_allclose(total, 2.0 * np.array([0.2, 0.4, 1.0]) - 0.5 * np.array([1.0, 0.0, 0.5]))
    assert set(parts) == {"a", "b"} and all(p.seconds >= 0 for p in parts.values())


def test_a_failing_or_non_finite_reward_is_one_error_naming_it(monkeypatch):
    def broken(ctx):
        def fn(images, metadata):
            raise ConnectionError("endpoint down")

        return fn

    monkeypatch.setitem(registry.REWARDS, "down", broken)
    monkeypatch.setitem(registry.REWARDS, "nan", _fake([0.5, np.nan]))
    images, meta = np.zeros((2, 8, 8, 3), np.uint8), [{"prompt": "x"}] * 2
    with pytest.raises(RewardError, match="reward 'down' failed: ConnectionError: endpoint down"):
        RewardMix("down", RewardContext(Params().rewards))(images, meta)
    with pytest.raises(RewardError, match="reward 'nan': 1 of 2 scores are not finite"):
        RewardMix("nan", RewardContext(Params().rewards))(images, meta)


def _trainer(spec, reward, quoted: bool = False) -> Trainer:
    cfg = TrainConfig(prompts_per_epoch=2, group_size=2, steps=2, lr=1e-4, reward=reward)
    rows = make_prompt_sets(spec, Params().prompts)[0][:6]
    if quoted:  # GenEval rows whose prompts also name a text to render (what the ocr reward judges)
        rows = [{**m, "prompt": f'{m["prompt"]} that says "{i}{i}"'} for i, m in enumerate(rows)]
    return Trainer(tiny_policy(TinyT2I.from_pretrained(ROOT / "assets" / "base"), "full"), rows,
                   build_detector("shapes", spec), cfg)  # fmt: skip


def test_a_non_finite_reward_stops_the_epoch_before_the_update(spec, monkeypatch):
    monkeypatch.setitem(registry.REWARDS, "nan", _fake(np.nan))
    trainer = _trainer(spec, {"geneval": 1.0, "nan": 1.0})
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    with pytest.raises(RewardError, match="reward 'nan'"):
        trainer.epoch(0)
    assert trainer.step == 0 and trainer.epochs_done == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.trainable_parameters(), strict=True))


def test_a_zero_weight_component_changes_nothing_but_is_logged(spec, monkeypatch):
    monkeypatch.setitem(registry.REWARDS, "const", _fake(0.7))
    alone, mixed = _trainer(spec, "geneval"), _trainer(spec, {"geneval": 1.0, "const": 0.0})
    m_alone, m_mixed = alone.epoch(0), mixed.epoch(0)
    assert m_mixed["reward_mean"] == m_alone["reward_mean"] and m_mixed["reward.const"] == pytest.approx(0.7)
    assert m_mixed["reward.geneval"] == pytest.approx(m_alone["reward_mean"])
    for a, b in zip(alone.policy.trainable_parameters(), mixed.policy.trainable_parameters(), strict=True):
        assert torch.equal(a, b)


def test_evaluate_reports_other_rewards_means_for_base_and_trained(tmp_path, monkeypatch):
    from elborl.geneval_io import write_layout
    from stages.evaluate import reward_means, rewards_csv, scores_table

    def bright(ctx):
        return lambda images, meta: RewardResult(images.mean((1, 2, 3)))

    monkeypatch.setitem(registry.REWARDS, "bright", bright)
    rows = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}]
    for name, value in (("base", 10), ("trained", 30)):
        write_layout(tmp_path / name, rows, 2, lambda i, m, v=value: [np.full((8, 8, 3), v, np.uint8)] * 2)
    mix = RewardMix({"bright": 1.0}, RewardContext(Params().rewards))
    means = {name: reward_means(tmp_path / name, mix, batch=1) for name in ("base", "trained")}
    summary = {"overall": 0.5, "per_tag": {"single_object": 0.5}}
    table = scores_table({"base": summary, "trained": summary}, means)
    assert table["rewards"] == {"bright": {"base": 10.0, "trained": 30.0, "gain": 20.0}}
    assert rewards_csv(table) == "reward,base,trained\nbright,10.0000,30.0000\n"
    with pytest.raises(UserError, match=r"evaluate.rewards: expected one of .*found 'nope'"):
        from elborl.config import parse_params

        parse_params({"evaluate": {"rewards": ["nope"]}}, "p.yaml")


def test_geneval_with_a_zero_weight_ocr_trains_the_same_weights_as_geneval_alone(spec):
    pytest.importorskip("rapidocr_onnxruntime")
    alone, mixed = _trainer(spec, "geneval", quoted=True), _trainer(spec, {"geneval": 1.0, "ocr": 0.0}, quoted=True)
    for epoch in range(2):
        m_alone, m_mixed = alone.epoch(epoch), mixed.epoch(epoch)
        assert m_mixed["reward_mean"] == m_alone["reward_mean"] and "reward.ocr" in m_mixed
    for a, b in zip(alone.policy.trainable_parameters(), mixed.policy.trainable_parameters(), strict=True):
        assert torch.equal(a, b)
