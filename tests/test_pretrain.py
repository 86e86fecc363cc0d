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


def test_warm_start_continues_from_an_export(tmp_path):
    from elborl.models.pretrain import export_warm_start

    spec = WorldSpec.from_config()
    rows, _ = make_prompt_sets(spec, PromptsConfig())
    first = pretrain(rows, spec, BaseConfig(**TINY, steps=4), tmp_path / "a", log=lambda s: None)
    export_warm_start(tmp_path / "a" / "checkpoint", tmp_path / "wip")
    assert sorted(p.name for p in (tmp_path / "wip").iterdir()) == [
        "ema.safetensors",
        "model.safetensors",
        "state.json",
    ]
    # No training steps left: the result is the exported EMA, up to fp16 rounding.
    same = pretrain(rows, spec, BaseConfig(**TINY, steps=4), tmp_path / "b", warm_start=tmp_path / "wip",
                    log=lambda s: None)  # fmt: skip
    a, b = first.state_dict(), same.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a if a[k].is_floating_point())
    more = pretrain(rows, spec, BaseConfig(**TINY, steps=6), tmp_path / "c", warm_start=tmp_path / "wip",
                    log=lambda s: None)  # fmt: skip
    c = more.state_dict()  # two more steps from the same start move the weights
    assert any(not torch.equal(b[k], c[k]) for k in b if b[k].is_floating_point())


def test_warm_start_from_a_model_folder_and_web_corpus(tmp_path):
    """`--warm-start` also takes a model folder (how the shipped base continued on the web corpus):
    a step at lr 1e-12 gives the folder's weights back; web-corpus steps train from them."""
    spec = WorldSpec.from_config()
    rows, _ = make_prompt_sets(spec, PromptsConfig())
    first = pretrain(rows, spec, BaseConfig(**TINY, steps=2), tmp_path / "a", log=lambda s: None)
    same = pretrain(rows, spec, BaseConfig(**TINY, steps=1, lr=1e-12), tmp_path / "b",
                    warm_start=tmp_path / "a" / "model", log=lambda s: None)  # fmt: skip
    a, b = first.state_dict(), same.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a if a[k].is_floating_point())
    web = pretrain(rows, spec, BaseConfig(**TINY, steps=2, corpus="web"), tmp_path / "c",
                   warm_start=tmp_path / "a" / "model", log=lambda s: None)  # fmt: skip
    c = web.state_dict()
    assert any(not torch.allclose(b[k], c[k]) for k in b if b[k].is_floating_point())


def test_bad_corpus_option_is_one_clear_error(cli, tmp_path):
    code, _, err = cli("base", "--train", "--corpus", "webb", "--steps", "1", "--out", tmp_path / "b")
    assert code == 2 and "--corpus: expected prompts or web, found 'webb'" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
