"""SD3 through every stage, on a tiny random SD3 pipeline built in code: prompts -> base -> train ->
evaluate through the stage commands (LoRA and full), the exported LoRA in a stock diffusers pipeline,
kill -9 and resume on the SD3 path, and missing weights refused before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file

from elborl.config import load_params
from elborl.geneval_io import read_metadata_jsonl
from elborl.sampling import sample
from elborl.storage import StorageOptions
from elborl.train import ema_weights
from stages.train import build_trainer
from tests.helpers.tiny_sd3 import build_tiny_sd3

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory) -> Path:
    return build_tiny_sd3(tmp_path_factory.mktemp("sd3") / "model")


def _params(root: Path, sd3: Path, finetune: str) -> Path:
    params = {
        "model": {"kind": "sd3", "path": str(sd3), "resolution": 32, "finetune": finetune, "lora_rank": 4,
                  "lora_alpha": 8, "max_sequence_length": 16},
        "prompts": {"test_size": 12, "train_size": 40},
        "base": {"eval_min_images_per_tag": 1, "eval_steps": 2},
        "train": {"epochs": 2, "prompts_per_epoch": 2, "group_size": 2, "steps": 2, "shift": 3.0, "eval_every": 1,
                  "eval_min_images_per_tag": 1, "lr": 1e-3, "checkpoints": str(root / "ckpt")},
        "evaluate": {"images_per_prompt": 1, "min_images_per_tag": 1, "steps": 2, "shift": 3.0, "grid_prompts": 4},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "model_name": "elborl-sd3-test"},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _elborl(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """The stage command as dvc.yaml runs it (a fresh process, one thread: runs compare bitwise)."""
    cmd = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert not check or done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def _stages(root: Path, params: Path) -> None:
    _elborl("prompts", "--params", params, "--out", root / "prompts")
    _elborl("base", "--params", params, "--prompts", root / "prompts" / "test.jsonl", "--out", root / "base")
    _elborl("train", "--params", params, "--prompts", root / "prompts", "--base", root / "base" / "model",
            "--out", root / "train")  # fmt: skip
    _elborl("evaluate", "--params", params, "--prompts", root / "prompts" / "test.jsonl", "--model",
            root / "train" / "model", "--base", root / "base" / "model", "--run", root / "train" / "run.json",
            "--out", root / "eval")  # fmt: skip


@pytest.fixture(scope="module", params=["lora", "full"])
def sd3_run(request, tmp_path_factory, sd3_folder, prefect_api) -> tuple[Path, Path]:
    """The four stage commands on an sd3 params file: (project folder, params file)."""
    root = tmp_path_factory.mktemp(f"sd3-{request.param}")
    params = _params(root, sd3_folder, request.param)
    _stages(root, params)
    return root, params


def test_sd3_through_every_stage(sd3_run, sd3_folder, cli):
    root, params = sd3_run
    finetune = load_params(params).model.finetune
    pointer = json.loads((root / "base" / "model" / "elborl_model.json").read_text())
    assert pointer["base"] == str(sd3_folder.resolve()) and len(list((root / "base" / "model").iterdir())) == 1
    assert json.loads((root / "base" / "summary.json").read_text())["n_images"] > 0

    model = root / "train" / "model"
    exported = json.loads((model / "elborl_model.json").read_text())
    assert exported["weights"] == {"lora": "lora", "full": "transformer"}[finetune]
    expected = "pytorch_lora_weights.safetensors" if finetune == "lora" else "diffusion_pytorch_model.safetensors"
    assert (model / expected).is_file()
    history = (root / "train" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "test.overall" in history[0]

    scores = json.loads((root / "eval" / "scores.json").read_text())
    assert {"trained", "base", "gain"} <= scores.keys() and 0 <= scores["trained"]["overall"] <= 1
    n_test = len((root / "prompts" / "test.jsonl").read_text().splitlines())
    assert len(list((root / "eval" / "trained" / "images").rglob("*.png"))) == n_test
    code, out, _ = cli("compare", "--params", params)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("version | champion") and lines[1].startswith("1 | *"), out
    # Prompt encodings were persisted with the run (one file per epoch that encoded new prompts).
    run_key = json.loads((root / "train" / "run.json").read_text())["run_key"]
    assert list((root / "ckpt" / run_key / "prompt_cache").glob("epoch_*.safetensors"))


def test_exported_lora_in_a_stock_pipeline_gives_the_trained_policy(sd3_run, sd3_folder):
    """The trained EMA weights sampled by our policy vs. the exported LoRA loaded into a stock
    StableDiffusion3Pipeline: same noise, same sigmas, same latents (and images)."""
    root, params_path = sd3_run
    params = load_params(params_path)
    if params.model.finetune != "lora":
        pytest.skip("the LoRA export; full fine-tuning exports a transformer folder (loaded by the evaluate stage)")
    run = json.loads((root / "train" / "run.json").read_text())
    trainer = build_trainer(params, root / "base" / "model", read_metadata_jsonl(root / "prompts" / "train.jsonl"))
    trainer.load(run["checkpoint"], StorageOptions())
    prompts = ["a photo of a red circle", "a photo of two squares"]
    noise = torch.randn(2, *trainer.policy.sample_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), ema_weights(trainer.policy, trainer.ema):
        cond = trainer.policy.encode(prompts)
        ours = sample(lambda z, t: trainer.policy.velocity(z, t, cond), noise, "euler", steps=4, shift=3.0).x0

    stock = StableDiffusion3Pipeline.from_pretrained(sd3_folder, local_files_only=True)
    stock.load_lora_weights(root / "train" / "model")
    with torch.no_grad():
        theirs = stock(prompts, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, latents=noise,
                       sigmas=[1.0, 0.75, 0.5, 0.25], output_type="latent", max_sequence_length=16).images  # fmt: skip
    diff = (ours - theirs).abs().max().item()
    print(f"exported LoRA vs trained policy: max |latent difference| {diff:.2e}")
    assert diff < 1e-4
    with torch.no_grad():  # and the LoRA changed the model: the base alone samples something else
        stock.disable_lora()
        base = stock(prompts, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, latents=noise,
                     sigmas=[1.0, 0.75, 0.5, 0.25], output_type="latent", max_sequence_length=16).images  # fmt: skip
    assert (ours - base).abs().max().item() > 1e-3


def test_sd3_train_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, sd3_run, sd3_folder):
    """kill -9 of the train CLI during epoch 2, rerun: epoch 1 replays from the cache (its prompt
    encodings too), epoch 2 runs again, and the run ends on the uninterrupted run's digest."""
    root, params_path = sd3_run
    if load_params(params_path).model.finetune != "lora":
        pytest.skip("one resume test on the SD3 path (LoRA, the recipe's setting)")
    expected = json.loads((root / "train" / "run.json").read_text())
    params = yaml.safe_load(params_path.read_text())
    params["train"]["checkpoints"] = str(tmp_path / "ckpt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--params", str(tmp_path / "params.yaml"), "--prompts",
           str(root / "prompts"), "--base", str(root / "base" / "model"), "--out", str(tmp_path / "train")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    results = tmp_path / "ckpt" / expected["run_key"] / "results"  # epoch 1's persisted result: epoch 2 runs
    deadline = time.time() + 300
    while not (results.is_dir() and any(results.iterdir())) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # mid epoch 2 (the CLI and everything it started)
    proc.wait()
    assert not (tmp_path / "train" / "run.json").exists()

    done = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    log = done.stdout + done.stderr
    assert "Task run 'epoch-0' - Finished in state Cached" in log
    assert "prompt encodings from the run's cache" in log
    resumed = json.loads((tmp_path / "train" / "run.json").read_text())
    assert resumed["digest"] == expected["digest"]
    ours, theirs = (load_file(r / "train" / "model" / "pytorch_lora_weights.safetensors") for r in (tmp_path, root))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_missing_sd3_weights_stop_the_stage_before_any_work(tmp_path, sd3_folder, cli):
    broken = tmp_path / "sd3"
    shutil.copytree(sd3_folder, broken)
    shutil.rmtree(broken / "text_encoder_3")
    params = _params(tmp_path / "p", broken, "lora")
    (tmp_path / "prompts").mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / "prompts" / name).write_text('{"tag": "single_object", "include": [{"class": "circle", '
                                                 '"count": 1}], "prompt": "a photo of a circle"}\n')  # fmt: skip
    code, _, err = cli("base", "--params", params, "--prompts", tmp_path / "prompts" / "test.jsonl", "--out",
                       tmp_path / "base")  # fmt: skip
    assert code == 2 and err.strip().count("\n") == 0
    assert "sd3/text_encoder_3/config.json: missing from the SD3 folder" in err
    assert not (tmp_path / "base").exists()
    code, _, err = cli("train", "--params", params, "--prompts", tmp_path / "prompts", "--base", tmp_path / "nowhere",
                       "--out", tmp_path / "train")  # fmt: skip
    assert code == 2 and "nowhere: --base: model folder not found" in err and not (tmp_path / "train").exists()
    code, _, err = cli("config", "check", "--params", params)
    assert code == 0  # the params are valid: only the folder is incomplete


def test_coco_prompts_are_refused_by_a_detector_that_cannot_judge_them(tmp_path, sd3_folder, cli):
    """The recipe's GenEval prompts with the shapes detector: one error naming the classes and the key,
    before the base is placed (never a reward that is always zero)."""
    params = _params(tmp_path / "p", sd3_folder, "lora")
    official = ROOT / "assets" / "geneval" / "evaluation_metadata.jsonl"
    code, _, err = cli("base", "--params", params, "--prompts", official, "--out", tmp_path / "base")
    assert code == 2 and "detector cannot detect: airplane, apple" in err and "geneval.detector" in err
    assert not (tmp_path / "base").exists()
