"""bench/geneval_parity.py: verdict agreement per tag and both overall scores, images matched by path."""

import json

from bench.geneval_parity import main, parity, read_results


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_parity_counts_agreement_per_tag_and_matches_images_by_their_path(tmp_path, capsys):
    official = [{"filename": f"/mnt/gpu/run/{i:05d}/samples/0000.png", "tag": tag, "correct": ok}
                for i, (tag, ok) in enumerate([("colors", True), ("colors", False), ("position", True),
                                               ("position", True)])]  # fmt: skip
    ours = [{**r, "filename": r["filename"].replace("/mnt/gpu/run", "out/images")} for r in official]
    ours[1]["correct"] = True  # one colours verdict differs
    _write(tmp_path / "official.jsonl", official)
    _write(tmp_path / "ours.jsonl", [*ours[:3], {**ours[3], "filename": "other/00009/samples/0000.png"}])
    result = parity(read_results(tmp_path / "official.jsonl"), read_results(tmp_path / "ours.jsonl"))
    assert result["per_tag"]["colors"] == {"n": 2, "agree": 0.5, "official": 0.5, "ours": 1.0}
    assert result["per_tag"]["position"]["n"] == 1 and result["overall"]["n"] == 3
    assert result["overall"]["official"] == (0.5 + 1.0) / 2 and result["overall"]["ours"] == 1.0
    assert result["missing"] == ["00003/samples/0000.png", "00009/samples/0000.png"]
    main(["--official", str(tmp_path / "official.jsonl"), "--ours", str(tmp_path / "ours.jsonl")])
    out = capsys.readouterr().out
    assert "| colors | 2 | 50.0% | 0.500 | 1.000 |" in out and "2 images scored by only one side" in out
