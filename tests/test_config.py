import json

import pytest
import yaml

from elborl.config import Params, load_params, parse_params
from elborl.errors import UserError
from tests.conftest import ROOT


def test_repo_params_validate_and_match_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == Params()  # params.yaml spells out the documented defaults


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prompts": {"test_sise": 3}}, "p.yaml: prompts.test_sise: unknown key (did you mean 'test_size'?)"),
        ({"wrld": {}}, "p.yaml: wrld: unknown key (did you mean 'world'?); expected one of: world, model, prompts"),
        ({"world": {"size": 100}}, "p.yaml: world.size: expected less than or equal to 64, found 100"),
        ({"world": {"size": "big"}}, "p.yaml: world.size: expected a valid integer"),
        (
            {"world": {"min_object": 12, "max_object": 10}},
            "p.yaml: world.min_object: expected <= max_object (10)",
        ),
        (
            {"world": {"classes": ["circle", "hexagon", "square", "cross"]}},
            "world.classes.1: expected 'circle'",
        ),
        (
            {"world": {"max_object": 15}},
            "p.yaml: world.max_object: expected 2 * max_object + 2 * gap <= size",
        ),
        ({"prompts": {"max_test_fraction": 1.5}}, "p.yaml: prompts.max_test_fraction: expected less than 1"),
        (
            {"geneval": {"detector": "yolo"}},
            "p.yaml: geneval.detector: expected 'shapes' or 'mask2former', found 'yolo'",
        ),
        ([1, 2], "p.yaml: expected a mapping of sections, found list"),
    ],
)
def test_bad_params_name_file_key_expected_found(data, expected):
    with pytest.raises(UserError) as err:
        parse_params(data, "p.yaml")
    assert expected in str(err.value)


def test_config_check_cli(cli, tmp_path):
    code, out, _ = cli("config", "check", "--params", ROOT / "params.yaml")
    assert code == 0
    assert json.loads(out)["world"]["size"] == 32

    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"prompts": {"seed": "x"}, "world": {"gap": 0}}))
    code, out, err = cli("config", "check", "--params", bad)
    assert code == 2 and out == ""
    assert f"{bad}: prompts.seed: expected a valid integer" in err
    assert f"{bad}: world.gap: expected greater than or equal to 1, found 0" in err

    code, _, err = cli("config", "check", "--params", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: params file not found" in err

    bad.write_text("world: [unclosed")
    code, _, err = cli("config", "check", "--params", bad)
    assert code == 2 and "not valid YAML" in err


def test_background_too_close_to_a_colour(cli, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"world": {"background": [230, 30, 30]}}))
    code, _, err = cli("world", "spec", "--params", p)
    assert code == 2 and "world.background: expected an RGB at least 80 from every colour anchor" in err


def test_the_sd35m_recipe_is_valid_and_is_the_reference_recipe():
    p = load_params(ROOT / "configs" / "sd35m_geneval.yaml")
    m, t, e = p.model, p.train, p.evaluate
    assert (m.kind, m.resolution, m.dtype, m.finetune, m.lora_rank, m.lora_alpha) == (
        "sd3",
        512,
        "bfloat16",
        "lora",
        32,
        64,
    )
    assert (t.estimator, t.objective, t.sampler, t.weighting, t.advantages) == (
        "elbo",
        "epg",
        "dpm2",
        "adaptive",
        "exact",
    )
    assert (t.prompts_per_epoch, t.group_size, t.steps, t.shift, t.cfg_scale, t.lr, t.epochs) == (
        48,
        24,
        10,
        3.0,
        1.0,
        3e-4,
        360,
    )
    assert (e.sampler, e.steps, e.shift, e.images_per_prompt) == ("euler", 40, 3.0, 4)
    assert p.prompts.source == "geneval" and p.geneval.detector == "mask2former"
