"""GenEval's Mask2Former + CLIP detector without mmcv, on tiny random-init models built in code: the
preprocessing, the post-processing on hand-built logits, the colour classifier's template averaging,
`elborl score --detector mask2former` end to end, and missing weights refused before any image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from elborl.config import GenEvalConfig
from elborl.geneval_io import read_metadata_jsonl, write_layout
from elborl.rewards.detectors import mask2former as m2f_module
from elborl.rewards.detectors.mask2former import ColorClassifier, Mask2FormerDetector, clip_crop, instances, preprocess
from elborl.rewards.geneval import COLOR_NAMES, Rules, select
from tests.conftest import OFFICIAL_METADATA
from tests.helpers.tiny_geneval import build_tiny_clip, build_tiny_mask2former


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("geneval-models")
    return build_tiny_mask2former(root / "mask2former"), build_tiny_clip(root / "clip")


def test_preprocess_resizes_like_mmdet_normalises_rgb_and_pads_to_32():
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = 255  # pure red: RGB order must survive
    x, resized = preprocess(image)
    factor = min(1333 / 60, 800 / 40)  # mmcv: min(long / max side, short / min side) = 20
    assert resized == (int(40 * factor + 0.5), int(60 * factor + 0.5)) == (800, 1200)
    assert x.shape == (3, 800, 1216)  # 1200 padded up to a multiple of 32
    expected = torch.tensor([(255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (0 - 103.53) / 57.375])
    assert torch.allclose(x[:, :800, :1200].mean((1, 2)), expected, atol=1e-5)
    assert torch.allclose(x[:, 400, 700], expected, atol=1e-5)
    assert torch.count_nonzero(x[:, :, 1200:]) == 0  # padding = 0 after normalisation, right and bottom
    wide, size = preprocess(np.zeros((1000, 2000, 3), np.uint8))
    f = min(1333 / 2000, 800 / 1000)
    assert size == (int(1000 * f + 0.5), int(2000 * f + 0.5)) and wide.shape[-2:] == (672, 1344)


def test_instances_from_hand_built_logits():
    """Two real queries (class 5 with a square mask, class 7 with a larger one) and a no-object query."""
    n_cls, q = 80, 3
    logits = torch.full((q, n_cls + 1), -10.0)
    logits[0, 5], logits[1, 7], logits[2, n_cls] = 6.0, 3.0, 10.0
    masks = torch.full((q, 200, 200), -20.0)  # stride 4 of the 800 x 800 input of a 64 x 64 image
    masks[0, 50:100, 100:150] = 20.0  # rows 16-31, cols 32-47 of the original (scale 0.32)
    masks[1, :100, :] = 20.0  # the top half
    inst = instances(logits, masks, resized=(800, 800), padded=(800, 800), original=(64, 64))
    assert len(inst.labels) == 100 and inst.masks.shape == (100, 64, 64)
    probs = logits.softmax(-1)
    triples = zip(inst.labels, inst.scores, inst.boxes, strict=True)
    best = {int(lab): (float(s), tuple(b.tolist())) for lab, s, b in triples if s > 0.3}
    assert best.keys() == {5, 7}
    assert best[5][0] == pytest.approx(float(probs[0, 5]), abs=1e-6)  # mask score ~ sigmoid(20) = 1
    assert best[5][1] == (32.0, 16.0, 48.0, 32.0)  # [x_min, y_min, x_max + 1, y_max + 1]
    assert best[7][1] == (0.0, 0.0, 64.0, 32.0)
    # A mask's score scales the class probability: half-confident logits inside the mask.
    masks[0, 50:100, 100:150] = 0.5
    soft = instances(logits, masks, (800, 800), (800, 800), (64, 64))
    top = soft.scores[(soft.labels == 5)].max()
    assert float(top) == pytest.approx(float(probs[0, 5]) * float(torch.sigmoid(torch.tensor(0.5))), rel=1e-3)


def test_padding_is_removed_before_the_resize_to_the_original_size():
    logits = torch.full((1, 81), -10.0)
    logits[0, 0] = 10.0
    masks = torch.full((1, 50, 60), -20.0)  # (200, 240) padded input of a (190, 230) resized image
    masks[0, :, 55:] = 20.0  # only the padding's columns are "on"
    inst = instances(logits, masks, resized=(190, 230), padded=(200, 240), original=(19, 23))
    on = inst.masks[inst.labels == 0][0]
    assert on.any() and not on[:, :20].any()  # the right edge only: the crop kept the image's own extent


def test_colour_classifier_averages_normalised_template_embeddings(weights):
    _, clip_path = weights
    clf = ColorClassifier(clip_path)
    got = clf.text_classifier("dog")
    expected = []
    with torch.no_grad():
        for color in COLOR_NAMES:  # one text at a time: no padding, independent of the batched path
            texts = [f"a photo of a {color} dog", f"a photo of a {color}-colored dog", f"a photo of a {color} object"]
            emb = [F.normalize(_text(clf, t), dim=-1) for t in texts]
            expected.append(F.normalize(torch.stack(emb).mean(0), dim=-1))
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(COLOR_NAMES)), atol=1e-5)


def _text(clf: ColorClassifier, text: str) -> torch.Tensor:
    ids = clf.tokenizer([text], return_tensors="pt")
    out = clf.model.get_text_features(**ids)
    return (out if isinstance(out, torch.Tensor) else out.pooler_output)[0]


def test_clip_crop_greys_out_what_is_outside_the_mask():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:] = (255, 0, 0)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:20] = True  # the left half of the box is the object
    x = clip_crop(image, mask, (10.0, 10.0, 30.0, 30.0), size=20)
    assert x.shape == (3, 20, 20)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    red, grey = (torch.tensor([1.0, 0, 0]) - mean) / std, (torch.tensor([0.6, 0.6, 0.6]) - mean) / std
    assert torch.allclose(x[:, 10, 2], red, atol=1e-4) and torch.allclose(x[:, 10, 17], grey, atol=1e-4)


def test_detector_batches_equal_single_images_and_colour_the_kept_detections(weights):
    m2f, clip_path = weights
    cfg = GenEvalConfig(detector="mask2former", detector_path=str(m2f), clip_path=str(clip_path), threshold=0.005)
    det = Mask2FormerDetector(cfg)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    batch = det.detect_batch(images)
    assert batch[1] == det.detect(images[1])
    assert len(batch[0]) == 100 and {d.cls for d in batch[0]} <= set(m2f_module.geneval_classes())
    kept = [d for ds in select(batch[0], "colors", Rules(threshold=0.005)).values() for d in ds]
    assert kept and all(d.color in COLOR_NAMES for d in kept)


def test_score_cli_with_mask2former_on_a_geneval_folder(weights, tmp_path, cli):
    m2f, clip_path = weights
    rows = read_metadata_jsonl(OFFICIAL_METADATA)[:3]
    rng = np.random.default_rng(1)
    write_layout(tmp_path / "images", rows, 1, lambda i, m: [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"geneval": {"detector": "mask2former", "detector_path": str(m2f),
                                                  "clip_path": str(clip_path)}}))  # fmt: skip
    code, out, err = cli("score", "--images", tmp_path / "images", "--out", tmp_path / "scores", "--params", params)
    assert code == 0, err
    results = [json.loads(line) for line in (tmp_path / "scores" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 3
    assert set(results[0]) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert json.loads(out)["n_images"] == 3


def test_missing_weights_are_named_before_any_image_is_read(weights, tmp_path, cli):
    _, clip_path = weights
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"geneval": {"detector": "mask2former", "detector_path": str(tmp_path / "none"),
                                                  "clip_path": str(clip_path)}}))  # fmt: skip
    code, _, err = cli("score", "--images", tmp_path / "no-images", "--out", tmp_path / "s", "--params", params)
    assert code == 2 and err.count("error:") == 1
    assert "none: geneval.detector_path: expected a local folder with config.json and *.safetensors" in err
    images, out = tmp_path / "no-images", tmp_path / "s"
    code, _, err = cli("score", "--images", images, "--out", out, "--detector", "mask2former")
    assert code == 2 and "geneval.detector_path: expected a local folder" in err and "found none" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"geneval": {"detector": "mask2former"}}))
    code, _, err = cli("config", "check", "--params", bad)
    assert code == 2 and "geneval.detector_path: expected a local folder for the mask2former detector" in err
