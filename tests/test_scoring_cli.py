"""`elborl render` + `elborl score` end to end, GenEval's files, and every bad input -> exit 2."""

import collections
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from elborl.geneval_io import read_metadata_jsonl
from tests.conftest import OFFICIAL_METADATA, ROOT

PARAMS = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A small rendered test set in GenEval's layout (module-wide; tests copy it before breaking it)."""
    from elborl.config import PromptsConfig
    from elborl.geneval_io import write_layout
    from elborl.io import write_jsonl
    from elborl.world.prompts import make_prompt_sets
    from elborl.world.render import render_images
    from elborl.world.spec import WorldSpec
    from pipeline.cli import main  # noqa: F401  (import check only)

    root = tmp_path_factory.mktemp("rendered")
    spec = WorldSpec.from_config()
    _, test = make_prompt_sets(spec, PromptsConfig(test_size=30))
    write_jsonl(root / "test.jsonl", test)
    write_layout(root / "images", test, 2, lambda i, m: render_images(m, spec, 2, 0, i))
    return root


def test_render_then_score(cli, tmp_path, rendered):
    code, out, _ = cli("render", "--metadata", rendered / "test.jsonl", "--out", tmp_path / "img",
                       "--images-per-prompt", 2, "--seed", 0, "--params", PARAMS)  # fmt: skip
    assert code == 0, out
    first = tmp_path / "img" / "00000"
    assert json.loads((first / "metadata.jsonl").read_text()) == read_metadata_jsonl(rendered / "test.jsonl")[0]
    assert sorted(p.name for p in (first / "samples").iterdir()) == ["0000.png", "0001.png"]
    # Same command, same seed -> same pixels as the fixture's layout.
    a = np.asarray(Image.open(first / "samples" / "0001.png"))
    b = np.asarray(Image.open(rendered / "images" / "00000" / "samples" / "0001.png"))
    assert np.array_equal(a, b)

    code, out, _ = cli("score", "--images", tmp_path / "img", "--out", tmp_path / "scores", "--params", PARAMS)
    assert code == 0
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert summary == json.loads(out)
    assert summary["overall"] == 1.0 and set(summary) == {"overall", "per_tag", "n_images"}
    rows = [json.loads(line) for line in (tmp_path / "scores" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == summary["n_images"] == 2 * len(list((tmp_path / "img").iterdir()))
    assert set(rows[0]) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert json.loads(rows[0]["metadata"])["prompt"] == rows[0]["prompt"]
    for cls, boxes in json.loads(rows[0]["details"]).items():
        assert all(len(b) == 5 for b in boxes), cls


def test_score_ignores_files_geneval_ignores(cli, tmp_path, rendered):
    images = tmp_path / "img"
    shutil.copytree(rendered / "images", images)
    (images / "notes").mkdir()  # not all digits: skipped
    (images / "00000" / "samples" / "grid.png").write_bytes(b"junk")  # not \d+.png: skipped
    (images / "00000" / "samples" / "0000.png.bak").write_bytes(b"junk")
    code, out, err = cli("score", "--images", images, "--out", tmp_path / "s", "--params", PARAMS)
    assert code == 0, err
    assert json.loads(out)["overall"] == 1.0


def test_official_geneval_metadata_parses():
    rows = read_metadata_jsonl(OFFICIAL_METADATA)
    assert len(rows) == 553
    assert collections.Counter(r["tag"] for r in rows) == {
        "position": 100, "color_attr": 100, "two_object": 99, "colors": 94, "single_object": 80, "counting": 80,
    }  # fmt: skip


def test_coco_classes_with_shapes_detector_is_an_error(cli, tmp_path):
    """GenEval's own prompts name COCO classes; the shapes detector refuses instead of scoring 0."""
    images = tmp_path / "coco"
    for i, meta in enumerate(read_metadata_jsonl(OFFICIAL_METADATA)[:40]):
        (images / f"{i:05d}" / "samples").mkdir(parents=True)
        (images / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps(meta))
        Image.new("RGB", (32, 32), (128, 128, 128)).save(images / f"{i:05d}" / "samples" / "0000.png")
    code, _, err = cli("score", "--images", images, "--out", tmp_path / "s", "--params", PARAMS)
    assert code == 2
    assert "names classes the 'shapes' detector cannot detect: " in err
    assert "bench, bicycle, bird" in err and "(it detects: circle, cross, square, triangle)" in err


def _break(tmp_path, rendered, how):
    images = tmp_path / "img"
    shutil.copytree(rendered / "images", images)
    first = images / "00000"
    if how == "malformed metadata":
        (first / "metadata.jsonl").write_text('{"tag": "colors", "include": [')
    elif how == "unknown tag":
        bad = {"tag": "shading", "include": [{"class": "circle", "count": 1}], "prompt": "p"}
        (first / "metadata.jsonl").write_text(json.dumps(bad))
    elif how == "missing samples":
        shutil.rmtree(first / "samples")
    elif how == "non-image file":
        (first / "samples" / "0000.png").write_text("not a png")
    elif how == "wrong size":
        Image.new("RGB", (64, 48), (128, 128, 128)).save(first / "samples" / "0000.png")
    elif how == "missing folder":
        shutil.rmtree(images)
    return images


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("malformed metadata", "00000/metadata.jsonl: not valid JSON"),
        ("unknown tag", "00000/metadata.jsonl: tag: expected one of single_object, two_object"),
        ("missing samples", "00000/samples: samples folder not found"),
        ("non-image file", "00000/samples/0000.png: not a readable image"),
        ("wrong size", "00000/samples/0000.png: expected a 32x32 image (the world's size), found 64x48"),
        ("missing folder", "img: image folder not found"),
    ],
)
def test_score_bad_input_exit_2(cli, tmp_path, rendered, how, message):
    images = _break(tmp_path, rendered, how)
    code, out, err = cli("score", "--images", images, "--out", tmp_path / "s", "--params", PARAMS)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "s" / "summary.json").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"tag": "colors", "include": [{"class": "circle", "count": 1}], "prompt": "p"', ":2: not valid JSON"),
        ('{"tag": "texture", "include": [{"class": "circle", "count": 1}], "prompt": "p"}', ":2: tag: expected one of"),
        ('{"tag": "colors", "include": [{"class": "circle", "count": 0}], "prompt": "p"}',
         ":2: include[0].count: expected an integer >= 1, found 0"),
        ('{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "teal"}], "prompt": "p"}',
         ":2: include[0].color: expected one of red, orange"),
        ('{"tag": "position", "include": [{"class": "circle", "count": 1, "position": ["near", 0]}], "prompt": "p"}',
         ":2: include[0].position: expected [relation, index of an earlier include clause]"),
        ('{"tag": "colors", "include": [{"class": "circle", "count": 1}]}', ":2: missing key 'prompt'"),
        ('{"tag": "colors", "include": [{"class": "hexagon", "count": 1}], "prompt": "p"}',
         "classes not in the world: hexagon"),
    ],
)  # fmt: skip
def test_render_bad_metadata_exit_2(cli, tmp_path, line, message):
    good = '{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}'
    meta = tmp_path / "meta.jsonl"
    meta.write_text(good + "\n" + line + "\n")
    code, _, err = cli("render", "--metadata", meta, "--out", tmp_path / "out", "--params", PARAMS)
    assert code == 2 and message in err, err
    assert str(meta) in err
    assert not (tmp_path / "out").exists()


def test_unknown_detector_exit_2(cli, tmp_path, rendered):
    code, _, err = cli("score", "--images", rendered / "images", "--out", tmp_path, "--detector", "yolo",
                       "--params", PARAMS)  # fmt: skip
    assert code == 2 and "--detector: expected one of shapes, mask2former, found 'yolo'" in err
