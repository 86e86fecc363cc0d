"""The `ocr` reward (FlowGRPO's formula over RapidOCR, run for real on rendered text) and the OCR prompt sets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from elborl.config import RewardsConfig
from elborl.errors import UserError
from elborl.ocr_prompts import PHRASES, TEMPLATES, ocr_prompt_sets
from elborl.rewards.ocr import levenshtein, normalise, target_text
from elborl.rewards.registry import REWARDS, RewardContext, RewardError, RewardMix

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr reward's engine: pip install rapidocr-onnxruntime")

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def render(text: str, size: tuple[int, int] = (512, 256), font_size: int = 48) -> np.ndarray:
    """Black text centred on white, uint8 (H, W, 3)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(DEJAVU), font_size) if DEJAVU.is_file() else ImageFont.load_default(font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    xy = ((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top)
    draw.text(xy, text, fill="black", font=font)
    return np.asarray(image)


@pytest.fixture(scope="module")
def reward():
    return REWARDS["ocr"](RewardContext(settings=RewardsConfig()))


def score(reward, texts: list[str], prompt: str) -> np.ndarray:
    result = reward(np.stack([render(t) for t in texts]), [{"prompt": prompt}] * len(texts))
    assert result.scores.shape == (len(texts),) and result.details is not None
    return result.scores


PROMPT = 'A bakery storefront with a sign that says "Fresh Bread Daily"'  # target: freshbreaddaily (15)


def test_levenshtein_hand_cases():
    cases = [
        ("", "", 0), ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0), ("kitten", "sitting", 3),
        ("flaw", "lawn", 2), ("saturday", "sunday", 3), ("abc", "acb", 2), ("a", "b", 1), ("ab", "ba", 2),
        ("intention", "execution", 5), ("gumbo", "gambol", 2),
    ]  # fmt: skip
    for a, b, d in cases:
        assert levenshtein(a, b) == d, (a, b)
        assert levenshtein(b, a) == d, (b, a)


def test_target_is_the_first_quoted_span_normalised():
    assert target_text('A sign that says "Open 24 Hours" and "Other"') == "open24hours"
    assert target_text('one quote "Hello There') == "hellothere"  # split('"')[1]: everything after it
    assert normalise(" Hello  World ") == "helloworld"


def test_exact_text_scores_one_and_other_text_less(reward):
    exact, other, blank = score(reward, ["Fresh Bread Daily", "Closed on Sunday", ""], PROMPT)
    assert exact == 1.0
    assert other < 0.5
    assert blank == 0.0  # nothing recognised: distance capped at len(target)


def test_extra_text_around_the_target_is_free(reward):
    (s,) = score(reward, ["Fresh Bread Daily 123"], PROMPT)
    assert s == 1.0  # FlowGRPO: target in recognised -> distance 0


def test_score_falls_with_edit_distance(reward):
    variants = {0: "Fresh Bread Daily", 1: "Fresh Bread Dally", 3: "Frosh Broad Dally", 6: "Grosh Broad Kolly"}
    target = target_text(PROMPT)
    for k, text in variants.items():
        assert levenshtein(normalise(text), target) == k
    scores = score(reward, list(variants.values()), PROMPT)
    print("ocr scores for 0/1/3/6 edits:", scores)
    assert np.all(np.diff(scores) < 0), scores
    for k, s in zip(variants, scores, strict=True):
        assert abs(s - (1 - k / len(target))) <= 1 / len(target) + 1e-9, (k, s)


def test_prompt_without_quotes_is_an_error_naming_it(reward):
    # FlowGRPO: prompt.split('"')[1] raises IndexError for the whole batch; here a RewardError naming the prompt.
    image = render("Fresh Bread Daily")[None]
    with pytest.raises(RewardError, match="no quotes here"):
        reward(image, [{"prompt": "A sign with no quotes here"}])
    with pytest.raises(RewardError, match="non-empty"):
        reward(image, [{"prompt": 'An empty sign " "'}])  # FlowGRPO: division by zero
    mix = RewardMix("ocr", RewardContext(settings=RewardsConfig()))
    with pytest.raises(RewardError, match="ocr"):
        mix(image, [{"prompt": "A sign with no quotes here"}])


def test_through_reward_mix(reward):
    mix = RewardMix({"ocr": 2.0}, RewardContext(settings=RewardsConfig()))
    total, parts = mix(render("Fresh Bread Daily")[None], [{"prompt": PROMPT}])
    assert total.tolist() == [2.0]
    assert parts["ocr"].details[0]["target"] == "freshbreaddaily"


def test_missing_engine_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails
    with pytest.raises(UserError, match="pip install rapidocr-onnxruntime"):
        REWARDS["ocr"](RewardContext(settings=RewardsConfig()))


def test_prompt_sets_disjoint_and_deterministic():
    train, test = ocr_prompt_sets(seed=0)
    assert (len(train), len(test)) == (400, 100)
    assert ocr_prompt_sets(seed=0) == (train, test)
    assert ocr_prompt_sets(seed=1) != (train, test)
    train_texts = {normalise(r["text"]) for r in train}
    test_texts = {normalise(r["text"]) for r in test}
    assert train_texts and test_texts and not train_texts & test_texts
    for rows in (train, test):
        assert len({r["prompt"] for r in rows}) == len(rows)
        for r in rows:
            assert set(r) == {"prompt", "tag", "text"} and r["tag"] == "ocr"
            assert target_text(r["prompt"]) == normalise(r["text"])
    small_train, small_test = ocr_prompt_sets(seed=3, n_train=10, n_test=5)
    assert (len(small_train), len(small_test)) == (10, 5)
    assert not {r["text"] for r in small_train} & {r["text"] for r in small_test}


def test_vocabulary_is_renderable():
    assert len({normalise(p) for p in PHRASES}) == len(PHRASES)
    assert all(p.replace(" ", "").isalnum() and '"' not in p for p in PHRASES)
    assert all(t.count("{text}") == 1 and t.count('"') == 2 for t in TEMPLATES)
