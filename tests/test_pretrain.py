"""Pretraining of the tiny model: it resumes exactly where an interrupted run stopped."""

import torch

from elborl.config import BaseConfig, PromptsConfig
from elborl.models.pretrain import pretrain
from elborl.models.tiny import TinyT2I
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec

TINY = dict(num_layers=1, num_heads=2, head_dim=16, text_hidden=32, text_layers=1, batch_size=4, warmup=2,
            checkpoint_every=2, eval_every=100)  # fmt: skip


def test_resume_matches_uninterrupted_run(tmp_path):
    spec = WorldSpec.from_config()
    rows, _ = make_prompt_sets(spec, PromptsConfig())
    straight = pretrain(rows, spec, BaseConfig(**TINY, steps=6), tmp_path / "a", log=lambda s: None)
    pretrain(rows, spec, BaseConfig(**TINY, steps=4), tmp_path / "b", log=lambda s: None)  # "killed" after step 4
    resumed = pretrain(rows, spec, BaseConfig(**TINY, steps=6), tmp_path / "b", log=lambda s: None)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "history.csv").read_text().count("\n") == 1 + 2  # header + step 4 + step 6
    saved = TinyT2I.from_pretrained(tmp_path / "a" / "model")
    assert next(iter(saved.transformer.parameters())).dtype == torch.float32  # fp16 on disk, upcast on load
