"""A temporary copy of the project as a fresh git repository, with small params: what the DVC tests and
bench/faults.py run `dvc repro` in."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _git(args: list[str], cwd: Path) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, timeout=300)


def make_clone(dest: Path) -> Path:
    """The repository's files (committed or not, minus ignored ones and data/) in a fresh git repository
    at `dest`, committed, then a second commit with params small enough for a `dvc repro` in a minute."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()  # fmt: skip
    for name in files:
        if name.startswith("data/") or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    _git(["init", "-q"], dest)
    _git(["add", "-A"], dest)
    _git(["commit", "-qm", "init", "--allow-empty"], dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["prompts"]["test_size"] = 12
    params["ceiling"]["images_per_prompt"] = 1
    params["base"].update(eval_min_images_per_tag=1, eval_steps=2)
    params["train"].update(epochs=2, prompts_per_epoch=2, group_size=2, steps=2, eval_every=1,
                           eval_min_images_per_tag=1)  # fmt: skip
    params["evaluate"].update(images_per_prompt=1, min_images_per_tag=1, steps=2, grid_prompts=4)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    _git(["commit", "-qam", "small params"], dest)
    return dest
