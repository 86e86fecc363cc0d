import collections
import json

import numpy as np
import pytest

from elborl.config import PromptsConfig, WorldConfig
from elborl.rewards.geneval import TAGS, relative_position
from elborl.world.prompts import draw_tag_balanced, make_prompt_sets
from elborl.world.render import draw, layout, render_images
from elborl.world.spec import COLORS, WorldSpec
from tests.conftest import ROOT


def test_world_spec_json(cli):
    code, out, _ = cli("world", "spec", "--params", ROOT / "params.yaml")
    spec = json.loads(out)
    assert code == 0
    assert set(spec) == {"size", "background", "classes", "colors", "min_object", "max_object"}
    assert spec["size"] == 32 and len(spec["classes"]) >= 4
    assert list(spec["colors"]) == [
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
    ]
    assert spec["background"] not in spec["colors"].values()


def test_prompt_sets_disjoint_all_tags_geneval_format(spec):
    train, test = make_prompt_sets(spec, PromptsConfig())
    train_prompts, test_prompts = {m["prompt"] for m in train}, {m["prompt"] for m in test}
    assert not train_prompts & test_prompts
    assert len(train_prompts) == len(train) and len(test_prompts) == len(test)  # no repeats
    assert set(collections.Counter(m["tag"] for m in test)) == set(TAGS)
    assert set(collections.Counter(m["tag"] for m in train)) == set(TAGS)
    assert abs(len(test) - 240) <= 5
    by_prompt = {m["prompt"]: m for m in train + test}
    assert by_prompt["a photo of three crosses"] == {
        "tag": "counting",
        "include": [{"class": "cross", "count": 3}],
        "exclude": [{"class": "cross", "count": 4}],
        "prompt": "a photo of three crosses",
    }
    assert by_prompt["a photo of an orange circle"]["include"] == [{"class": "circle", "count": 1, "color": "orange"}]
    assert by_prompt["a photo of a circle left of a square"]["include"] == [
        {"class": "square", "count": 1},
        {"class": "circle", "count": 1, "position": ["left of", 0]},
    ]
    for m in train + test:
        assert {c["class"] for c in m["include"]} <= set(spec.classes)
        if m["tag"] == "counting":
            assert 2 <= m["include"][0]["count"] <= 4


def test_same_scene_never_split_across_sets(spec):
    """'A left of B' and 'B right of A' are one scene: both in train or both in test."""
    _train, test = make_prompt_sets(spec, PromptsConfig(seed=3))
    test_prompts = {m["prompt"] for m in test}
    for a, b in [("circle", "square"), ("triangle", "cross"), ("square", "cross")]:
        pair = {f"a photo of a {a} left of a {b}", f"a photo of a {b} right of a {a}"}
        assert len(pair & test_prompts) in (0, 2)
        pair = {f"a photo of a {a} and a {b}", f"a photo of a {b} and a {a}"}
        assert len(pair & test_prompts) in (0, 2)


def test_prompt_sets_seeded(spec):
    a = make_prompt_sets(spec, PromptsConfig(seed=1))
    assert a == make_prompt_sets(spec, PromptsConfig(seed=1))
    assert a != make_prompt_sets(spec, PromptsConfig(seed=2))
    train, _ = make_prompt_sets(spec, PromptsConfig(train_size=60))
    counts = collections.Counter(m["tag"] for m in train)
    # Tags share the cap evenly; a tag with fewer train prompts than its share gives the rest away.
    assert len(train) == 60 and set(counts) == set(TAGS) and max(counts.values()) <= 14


def test_tag_weights_shift_the_draw_and_name_a_mistyped_tag(spec):
    train, _ = make_prompt_sets(spec, PromptsConfig())
    draw = lambda w: collections.Counter(m["tag"] for m in draw_tag_balanced(train, 6000, np.random.default_rng(0), w))  # noqa: E731
    uniform = draw(None)
    assert uniform == draw({}) and all(900 < c < 1100 for c in uniform.values())  # {} = the unweighted draws
    weighted = draw({"single_object": 0, "counting": 3})  # counting 3 / 7 of the draws, the other four 1 / 7
    assert "single_object" not in weighted and 2400 < weighted["counting"] < 2750 and 750 < weighted["position"] < 950
    with pytest.raises(ValueError, match=r"tag_weights: \['countng'\] not among"):
        draw({"countng": 2})
    with pytest.raises(ValueError, match="weighs 0"):
        draw(dict.fromkeys(TAGS, 0))


def test_prompts_cli(tmp_path, prefect_api):
    # A subprocess, as dvc runs it: Prefect binds its log console when first imported, so an in-process
    # run would depend on which test imported Prefect first.
    import subprocess
    import sys

    params = str(ROOT / "params.yaml")
    cmd = [sys.executable, "-m", "pipeline.cli", "prompts", "--out", str(tmp_path), "--params", params]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "prompts: test:" in done.stdout + done.stderr  # the flow's log
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) <= {"tag", "include", "exclude", "prompt"} for line in lines)


@pytest.mark.parametrize("size", [24, 32, 64])
def test_layouts_satisfy_metadata_with_margin(size):
    cfg = WorldConfig(size=size, min_object=6 if size == 24 else 9, max_object=10 if size == 24 else 13)
    spec = WorldSpec.from_config(cfg)
    train, test = make_prompt_sets(spec, PromptsConfig())
    rng = np.random.default_rng(0)
    for meta in train[::7] + test:
        objects = layout(meta, spec, rng)
        assert len(objects) == sum(c["count"] for c in meta["include"])
        start = 0
        groups = []
        for clause in meta["include"]:
            group = objects[start : start + clause["count"]]
            start += clause["count"]
            groups.append(group)
            assert all(o.cls == clause["class"] for o in group)
            if "color" in clause:
                assert all(o.color == clause["color"] for o in group)
            if "position" in clause:
                relation, target = clause["position"]
                for o in group:
                    for t in groups[target]:
                        assert relation in relative_position(o.box, t.box)
        for o in objects:
            assert o.x >= 0 and o.x + o.side <= size and o.y >= 0 and o.y + o.side <= size
            assert spec.min_object <= o.side <= spec.max_object


def test_draw_paints_anchor_colours_on_background(spec):
    meta = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "blue"}], "prompt": "p"}
    objects = layout(meta, spec, np.random.default_rng(0))
    image = draw(objects, spec)
    o = objects[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert tuple(image[o.y + o.side // 2, o.x + o.side // 2]) == COLORS["blue"]
    assert tuple(image[0, 0]) == spec.background or o.x == 0 or o.y == 0


def test_render_images_deterministic_per_prompt(spec):
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 4}], "prompt": "p"}
    a = render_images(meta, spec, 3, seed=5, index=7)
    b = render_images(meta, spec, 3, seed=5, index=7)
    c = render_images(meta, spec, 3, seed=5, index=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_prompt_split_does_not_depend_on_the_process():
    """Python salts str hashes per process; the split must not inherit set iteration order."""
    import subprocess
    import sys

    code = (
        "import hashlib, json; from elborl.world.prompts import make_prompt_sets; from elborl.config import "
        "PromptsConfig; from elborl.world.spec import WorldSpec; "
        "sets = make_prompt_sets(WorldSpec.from_config(), PromptsConfig()); "
        "print(hashlib.md5(json.dumps(sets).encode()).hexdigest())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True)
        for seed in ("1", "2", "3")
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1
