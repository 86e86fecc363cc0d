"""`elborl sample` writes GenEval's layout that `elborl score` reads; seeds make it reproducible."""

import json

import numpy as np
import pytest
from PIL import Image

from elborl.models.tiny import TinyConfig, TinyT2I
from tests.conftest import ROOT

SMALL = TinyConfig(size=32, patch_size=4, num_layers=1, num_heads=2, head_dim=16, text_hidden=32, text_layers=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    TinyT2I.create(SMALL).save_pretrained(path)
    return path


@pytest.fixture
def metadata(tmp_path):
    rows = [
        {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
        {"tag": "counting", "include": [{"class": "cross", "count": 2}], "exclude": [{"class": "cross", "count": 3}],
         "prompt": "a photo of two crosses"},
    ]  # fmt: skip
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sample_then_score(cli, tmp_path, model_dir, metadata):
    args = ["sample", "--model", model_dir, "--metadata", metadata, "--images-per-prompt", 3, "--steps", 2]
    code, out, err = cli(*args, "--out", tmp_path / "a", "--seed", 7)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a" / "00001" / "samples").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
    ]
    code, _, _ = cli(*args, "--out", tmp_path / "b", "--seed", 7, "--batch-size", 2)  # other batching, same images
    assert code == 0
    a = np.asarray(Image.open(tmp_path / "a" / "00001" / "samples" / "0002.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / "00001" / "samples" / "0002.png")))
    assert a.shape == (32, 32, 3)
    code, out, _ = cli("score", "--images", tmp_path / "a", "--out", tmp_path / "s", "--params", ROOT / "params.yaml")
    assert code == 0 and json.loads(out)["n_images"] == 6


def test_sample_bad_input(cli, tmp_path, model_dir, metadata):
    code, _, err = cli("sample", "--model", tmp_path / "none", "--metadata", metadata, "--out", tmp_path / "o")
    assert code == 2 and "none: model folder not found" in err
    broken = tmp_path / "broken"
    TinyT2I.create(SMALL).save_pretrained(broken)
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    code, _, err = cli("sample", "--model", broken, "--metadata", metadata, "--out", tmp_path / "o")
    assert code == 2 and "broken/transformer: no weights (*.safetensors)" in err
    code, _, err = cli(
        "sample", "--model", model_dir, "--metadata", metadata, "--out", tmp_path / "o", "--sampler", "ddim"
    )
    assert code == 2 and "--sampler: expected one of euler, dpm2, flow_sde, found 'ddim'" in err
