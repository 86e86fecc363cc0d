from __future__ import annotations

import sys
from pathlib import Path

import pytest

from elborl.cli import main
from elborl.config import Params
from elborl.world.spec import WorldSpec

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_METADATA = ROOT / "assets" / "geneval" / "evaluation_metadata.jsonl"


@pytest.fixture
def spec() -> WorldSpec:
    return WorldSpec.from_config(Params().world)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `elborl` CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["elborl", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
