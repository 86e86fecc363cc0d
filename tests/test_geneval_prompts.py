import collections
import json

import pytest

from elborl.config import Params, PromptsConfig
from elborl.geneval_io import read_metadata_jsonl
from elborl.geneval_prompts import coco_plural, coco_train_prompts, official_test_prompts
from elborl.rewards.geneval import TAGS
from elborl.world.prompts import make_prompt_sets
from stages.prompts import run, run_stage
from tests.conftest import ROOT

COCO = [line.strip() for line in (ROOT / "assets" / "geneval" / "object_names.txt").read_text().splitlines()]
MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    return official_test_prompts()


@pytest.fixture(scope="module")
def train_rows(test_rows) -> list[dict]:
    return coco_train_prompts(test_rows, seed=0, size=3000)


def scenes(meta: dict) -> set[tuple]:
    """Every way of writing the scene: tag + sorted include clauses; position also mirrored."""
    if meta["tag"] == "position":
        ref, obj = meta["include"]
        rel = obj["position"][0]
        return {("position", obj["class"], rel, ref["class"]), ("position", ref["class"], MIRROR[rel], obj["class"])}
    clauses = sorted(json.dumps(c, sort_keys=True) for c in meta["include"])
    return {(meta["tag"], *clauses)}


def test_official_prompts_are_genevals_553(test_rows):
    assert len(test_rows) == 553
    assert collections.Counter(m["tag"] for m in test_rows) == {
        "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
    }  # fmt: skip
    assert len(COCO) == 80 and {m["include"][0]["class"] for m in test_rows if m["tag"] == "single_object"} == set(COCO)


def test_plurals_match_the_official_counting_prompts(test_rows):
    counting = [m for m in test_rows if m["tag"] == "counting"]
    for m in counting:
        c = m["include"][0]
        assert m["prompt"].endswith(" " + coco_plural(c["class"])), m["prompt"]
    assert coco_plural("person") == "persons" and coco_plural("bus") == "buses" and coco_plural("sheep") == "sheeps"
    assert coco_plural("computer mouse") == "computer mice" and coco_plural("skis") == "skis"


def test_train_rows_are_valid_geneval_metadata(train_rows, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in train_rows))
    assert read_metadata_jsonl(path) == train_rows
    assert len({m["prompt"] for m in train_rows}) == len(train_rows) == 3000
    for m in train_rows:
        assert {c["class"] for c in m["include"] + m.get("exclude", [])} <= set(COCO)
        if m["tag"] == "counting":
            (inc,), (exc,) = m["include"], m["exclude"]
            assert 2 <= inc["count"] <= 4 and exc == {"class": inc["class"], "count": inc["count"] + 1}
        else:
            assert "exclude" not in m
        if m["tag"] in ("colors", "color_attr"):
            assert all(c["class"] != "person" for c in m["include"])  # GenEval never colours a person


def test_train_tags_balanced_where_scenes_allow(train_rows):
    tags = collections.Counter(m["tag"] for m in train_rows)
    # The test set holds every single-object scene; counting (80 x 3 - 80) and colors (79 x 10 - 94, no coloured
    # person) run out before their share, which goes to the other tags.
    assert "single_object" not in tags and tags["counting"] == 160 and tags["colors"] == 696
    assert set(tags) == set(TAGS) - {"single_object"}
    big = [tags[t] for t in ("two_object", "position", "color_attr")]
    assert max(big) - min(big) <= 1 and sum(tags.values()) == 3000


def test_no_train_scene_is_a_test_scene(test_rows, train_rows):
    test_scenes = set().union(*(scenes(m) for m in test_rows))
    assert not [m["prompt"] for m in train_rows if scenes(m) & test_scenes]
    # The generator must avoid the test scenes: a large draw would otherwise hit some.
    big = coco_train_prompts(test_rows, seed=1, size=30000)
    assert not [m["prompt"] for m in big if scenes(m) & test_scenes]
    assert len(big) == 30000


def test_deterministic_under_a_seed(test_rows, train_rows):
    assert coco_train_prompts(test_rows, seed=0, size=3000) == train_rows
    assert coco_train_prompts(test_rows, seed=1, size=3000) != train_rows


def test_wording_as_geneval_writes_it(test_rows):
    official = {m["prompt"] for m in test_rows}
    assert {"a photo of four dogs", "a photo of a dog right of a teddy bear", "a photo of two sheeps"} <= official
    big = coco_train_prompts(test_rows, seed=0, size=200000)
    by_prompt = {m["prompt"]: m for m in big}
    umbrella = {"class": "umbrella", "count": 1, "color": "orange"}
    assert by_prompt["a photo of three dogs"]["include"] == [{"class": "dog", "count": 3}]
    assert by_prompt["a photo of a dog left of a cat"] == {
        "tag": "position",
        "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a dog left of a cat",
    }
    assert by_prompt["a photo of an orange umbrella"]["include"] == [umbrella]
    assert "a photo of an elephant and a bus" in by_prompt
    assert "a photo of a red apple and an orange bench" in by_prompt
    assert "a photo of two persons" in by_prompt and "a photo of four couches" in by_prompt
    # Test scenes never come back, in either wording.
    assert "a photo of three persons" not in by_prompt
    assert "a photo of a teddy bear left of a dog" not in by_prompt and "a photo of a dog left of a cat" in by_prompt


def test_run_stage_geneval_writes_both_files(tmp_path, capsys):
    params = Params(prompts=PromptsConfig(source="geneval", geneval_train_size=600))
    run_stage(params, tmp_path)
    test = read_metadata_jsonl(tmp_path / "test.jsonl")
    train = read_metadata_jsonl(tmp_path / "train.jsonl")
    assert test == official_test_prompts() and len(train) == 600
    assert "prompts: test: 553 prompts" in capsys.readouterr().out


def test_source_world_unchanged(spec):
    assert run(spec, PromptsConfig()) == make_prompt_sets(spec, PromptsConfig())
