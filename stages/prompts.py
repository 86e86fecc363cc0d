"""Stage `prompts`: disjoint GenEval-format train and test prompt sets.

`prompts.source` world: every prompt over the embedded world's classes, scenes split into train and test.
`prompts.source` geneval: GenEval's official 553 prompts as test, a generated COCO train set beside them.
`prompts.source` ocr: text-rendering prompts for the `ocr` reward, train and test disjoint in their texts.

Reads params: world, prompts. Writes: <out>/train.jsonl, <out>/test.jsonl.
"""

from __future__ import annotations

import collections
from pathlib import Path

from elborl.config import Params, PromptsConfig
from elborl.geneval_prompts import coco_train_prompts, official_test_prompts
from elborl.io import write_jsonl
from elborl.ocr_prompts import ocr_prompt_sets
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec


def run(spec: WorldSpec, cfg: PromptsConfig, official: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """Pure part: (train, test) metadata lists.

    Args:
        spec: The embedded world (source world).
        cfg: The `prompts` section.
        official: GenEval's official prompts (source geneval; read by `run_stage`).
    """
    if cfg.source == "ocr":
        return ocr_prompt_sets(cfg.seed, cfg.ocr_train_size, cfg.ocr_test_size)
    if cfg.source == "geneval":
        if official is None:
            raise ValueError("prompts.source geneval needs GenEval's official prompts")
        return coco_train_prompts(official, cfg.seed, cfg.geneval_train_size), official
    return make_prompt_sets(spec, cfg)


def run_stage(params: Params, out: str | Path = "data/prompts") -> None:
    """File I/O: write train.jsonl and test.jsonl and log one line per set."""
    official = official_test_prompts() if params.prompts.source == "geneval" else None
    train, test = run(WorldSpec.from_config(params.world), params.prompts, official)
    write_jsonl(Path(out) / "train.jsonl", train)
    write_jsonl(Path(out) / "test.jsonl", test)
    for name, rows in (("train", train), ("test", test)):
        tags = collections.Counter(m["tag"] for m in rows)
        print(f"prompts: {name}: {len(rows)} prompts ({', '.join(f'{t} {n}' for t, n in sorted(tags.items()))})")
