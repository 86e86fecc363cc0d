"""Stage `prompts`: disjoint GenEval-format train and test prompt sets over the world.

Reads params: world, prompts. Writes: <out>/train.jsonl, <out>/test.jsonl.
"""

from __future__ import annotations

import collections
from pathlib import Path

from elborl.config import Params, PromptsConfig
from elborl.io import write_jsonl
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec


def run(spec: WorldSpec, cfg: PromptsConfig) -> tuple[list[dict], list[dict]]:
    """Pure part: (train, test) metadata lists."""
    return make_prompt_sets(spec, cfg)


def run_stage(params: Params, out: str | Path = "data/prompts") -> None:
    """File I/O: write train.jsonl and test.jsonl and log one line per set."""
    train, test = run(WorldSpec.from_config(params.world), params.prompts)
    write_jsonl(Path(out) / "train.jsonl", train)
    write_jsonl(Path(out) / "test.jsonl", test)
    for name, rows in (("train", train), ("test", test)):
        tags = collections.Counter(m["tag"] for m in rows)
        print(f"prompts: {name}: {len(rows)} prompts ({', '.join(f'{t} {n}' for t, n in sorted(tags.items()))})")
