"""Faults that must cost at most an epoch and never a wrong result: interrupted folder swaps, transient vs
permanent errors, non-finite losses and weights, corrupted checkpoints, secrets kept out of errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from elborl import checkpoint, storage
from elborl.checkpoint import CorruptCheckpoint
from elborl.config import Params, TrainConfig
from elborl.errors import UserError
from elborl.io import atomic_dir
from elborl.models.tiny import TinyT2I, tiny_policy
from elborl.rewards.detectors import build_detector
from elborl.storage import StorageOptions, StorageUnreachable
from elborl.train import Trainer
from elborl.update import NonFiniteError
from elborl.world.prompts import make_prompt_sets
from tests.conftest import ROOT


def test_atomic_dir_never_leaves_neither_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "v").write_text("1")
    # A kill between "current -> .old" and ".tmp -> current": only the old folder exists, aside.
    target.rename(tmp_path / "model.old")
    (tmp_path / "model.tmp").mkdir()
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        assert (target / "v").read_text() == "1"  # put back before the new one is built
        raise RuntimeError("killed while building")
    assert (target / "v").read_text() == "1"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(("error", "retried"), [
    (StorageUnreachable("s3://b/x: cannot reach the storage at http://h"), True),
    (ConnectionError("reset"), True),
    (TimeoutError("slow"), True),
    (FileNotFoundError("gone"), False),  # an OSError, but not a transient one
    (PermissionError("denied"), False),
    (UserError("bad params"), False),
    (ValueError("a bug"), False),
])  # fmt: skip
def test_only_transient_faults_are_retried(error, retried):
    from pipeline.train import _transient  # here, not at collection: importing Prefect binds its log console

    def result():
        raise error

    assert _transient(None, None, SimpleNamespace(result=result)) is retried


def _trainer(spec, **train) -> Trainer:
    cfg = TrainConfig(prompts_per_epoch=2, group_size=2, steps=2, lr=1e-4, **train)
    rows = make_prompt_sets(spec, Params().prompts)[0][:6]
    return Trainer(tiny_policy(TinyT2I.from_pretrained(ROOT / "assets" / "base"), "full"), rows,
                   build_detector("shapes", spec), cfg)  # fmt: skip


def test_a_non_finite_loss_or_gradient_stops_the_epoch_before_its_step(spec, monkeypatch):
    trainer = _trainer(spec)
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    monkeypatch.setattr("elborl.update.OBJECTIVES", {"epg": lambda *a: torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteError, match=r"epoch 1: non-finite loss nan .* at optimizer step 1"):
        trainer.epoch(0)
    monkeypatch.undo()
    params = trainer.policy.trainable_parameters()
    params[0].register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.raises(NonFiniteError, match="epoch 1: non-finite gradient norm"):
        trainer.epoch(0)
    assert trainer.step == 0 and trainer.epochs_done == 0
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_no_checkpoint_with_non_finite_weights_and_corrupt_ones_are_never_loaded(spec, tmp_path):
    trainer = _trainer(spec)
    trainer.epoch(0)
    url = checkpoint.epoch_url(str(tmp_path), 1)
    trainer.save(url)
    for name, damage in (("current", lambda b: b[: len(b) // 2]), ("optimizer", lambda b: b[:-1] + bytes([b[-1] ^ 1]))):
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(url, broken)
        path = broken / f"{name}.safetensors"
        path.write_bytes(damage(path.read_bytes()))  # truncated / one bit flipped
        with pytest.raises(CorruptCheckpoint, match=f"{broken}: the files' digest .* differs"):
            _trainer(spec).load(str(broken))
    with torch.no_grad():
        trainer.policy.trainable_parameters()[0][0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite values in current"):
        trainer.save(checkpoint.epoch_url(str(tmp_path), 2))
    assert not Path(checkpoint.epoch_url(str(tmp_path), 2)).exists()


def test_credentials_never_appear_in_storage_errors(monkeypatch):
    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST-ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    opts = StorageOptions("http://127.0.0.1:9", connect_timeout=0.5, retries=1)
    with pytest.raises(StorageUnreachable) as err:
        storage.write_bytes("s3://bucket/x", b"data", opts)
    assert "cannot reach the storage at http://127.0.0.1:9" in str(err.value) and secret not in str(err.value)


def test_a_cut_prompt_cache_file_is_skipped_and_its_prompts_encoded_again(tmp_path):
    from elborl.models.tiny import TinyConfig

    def policy():
        return tiny_policy(TinyT2I.create(TinyConfig(num_layers=1, text_layers=1)), "frozen")

    first = policy()
    states, _ = first.encode(["a photo of a circle", "a photo of a cross"])
    checkpoint.save_prompt_cache(str(tmp_path), 1, first)
    cache = tmp_path / "prompt_cache" / "epoch_0001.safetensors"
    data = cache.read_bytes()
    cache.write_bytes(data[:-100])  # a write cut short
    assert checkpoint.load_prompt_cache(str(tmp_path), policy()) == 0
    cache.write_bytes(data)
    resumed = policy()
    assert checkpoint.load_prompt_cache(str(tmp_path), resumed) == 2
    resumed._encode_fn = None  # a cached prompt never reaches the encoder again
    assert torch.equal(resumed.encode(["a photo of a cross"])[0][0], states[1])


def test_a_cached_result_cut_short_is_recomputed_and_a_foreign_one_refused(tmp_path):
    import json
    import pickle

    from pipeline.results import EpochJSON, UntrustedResult, check_cached_result

    record = json.dumps({"metadata": {"serializer": {"type": EpochJSON().type}}, "result": "{}"}).encode()
    good, empty, cut, foreign = (tmp_path / n for n in ("good", "empty", "cut", "foreign"))
    good.write_bytes(record)
    empty.write_bytes(b"")
    cut.write_bytes(record[: len(record) // 2])
    foreign.write_bytes(pickle.dumps({"epoch": 0}))
    check_cached_result(str(good))
    for path in (empty, cut):  # a kill inside Prefect's write: removed, so the epoch runs again
        check_cached_result(str(path))
        assert not path.exists()
    with pytest.raises(UntrustedResult, match="not a JSON result record"):
        check_cached_result(str(foreign))
    assert foreign.exists()
    check_cached_result(str(tmp_path / "missing"))
