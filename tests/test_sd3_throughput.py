"""bench/sd3_throughput.py: the --tiny run prints the expected tables with finite positive numbers, and
its FLOP counts agree with an analytic count of the MMDiT (tiny, and SD3.5-M's own config on the meta
device, where nothing is computed)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.sd3_throughput import SD35M, TINY, build_models, count_flops, main, make_policy

PHASES = ["rollout", "VAE decode", "update"]


def parse_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in text: rows of cells, the header row first, the |---| row dropped."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def number(cell: str) -> float:
    cell = cell.replace(",", "")
    return float(cell[:-1]) / 100 if cell.endswith("%") else float(cell)


def analytic_forward_flops(cfg: dict, latent_side: int, text_tokens: int) -> float:
    """FLOPs of one MMDiT forward for one image, by hand: every token through its own stream's
    projections (image: q k v out + 4x MLP = 12 d^2, + 4 d^2 in a dual-attention layer; text: the same
    12 d^2, 3 d^2 in the last layer, which keeps only the text's q k v), joint attention 4 T^2 d (plus
    4 T_img^2 d for the image-only attention of a dual layer), the patch / caption embeddings and the
    output projection. The per-sample AdaLN modulation and timestep embeddings are left out."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    p, layers = cfg["patch_size"], cfg["num_layers"]
    t_img = (latent_side // p) ** 2
    t_all = t_img + text_tokens
    flops = 2 * t_img * p * p * (cfg["in_channels"] + cfg["out_channels"]) * d
    flops += 2 * text_tokens * cfg["joint_attention_dim"] * d
    for i in range(layers):
        dual = i in cfg["dual_attention_layers"]
        img = 12 + (4 if dual else 0)
        txt = 12 if i < layers - 1 else 3
        flops += 2 * d * d * (t_img * img + text_tokens * txt) + 4 * t_all**2 * d + (4 * t_img**2 * d if dual else 0)
    return flops


def transformer_forward_flops(transformer, spec, latent_side: int, device: str) -> float:
    """Counted FLOPs of one forward of the bare transformer for one image."""
    cfg = spec.transformer
    x = torch.randn(1, cfg["in_channels"], latent_side, latent_side, device=device)
    states = torch.randn(1, spec.text_tokens, cfg["joint_attention_dim"], device=device)
    pooled = torch.randn(1, cfg["pooled_projection_dim"], device=device)
    t = torch.full((1,), 500.0, device=device)
    with torch.no_grad():
        return count_flops(lambda: transformer(x, states, pooled, t, return_dict=False))


def test_tiny_run_prints_both_tables_with_finite_positive_numbers(tmp_path):
    out = tmp_path / "report.md"
    printed = main(["--tiny", "--device", "cpu", "--repeats", "1", "--out", str(out)])
    text = out.read_text()
    assert text == printed
    assert "random tensors of the real shapes" in text
    phases, projection = parse_tables(text)

    head, *rows = phases
    assert head[:4] == ["finetune", "phase", "batch", "items/s"]
    assert head[4:8] == ["s / batch", "GFLOP / item", "TFLOP/s", "MFU (float32)"]
    assert head[8:] == ["peak RSS (GiB)", "target"]
    assert [(r[0], r[1].split(":")[0].split(" (")[0]) for r in rows] == [
        (mode, phase) for mode in ("lora", "full") for phase in PHASES
    ]
    for row in rows:
        values = [number(c) for c in row[2:9]]
        assert all(math.isfinite(v) and v > 0 for v in values), row
        items_per_s, s_per_batch = values[1], values[2]
        assert items_per_s == pytest.approx(values[0] / s_per_batch, rel=0.02)  # batch / (s / batch)
    assert all(r[9].startswith(">= 40%") for r in rows if r[1].startswith("update"))

    # The update is K = 9 ELBO terms, each a current forward + backward (about 2 forwards' FLOPs) and
    # old + ref forwards: about 9 x 5 forwards against the rollout's 10, with full fine-tuning.
    gflop = {r[1].split(":")[0]: number(r[5]) for r in rows if r[0] == "full"}
    assert gflop["update"] / gflop["rollout"] == pytest.approx(9 * 5 / 10, rel=0.05)

    head, *rows = projection
    assert head == ["finetune", "s / epoch (1 GPU)", "GPU-hours", "hours on 8 GPUs", "target GPU-hours",
                    "study GPU-hours"]  # fmt: skip
    assert [r[0] for r in rows] == ["lora", "full"]
    for row in rows:
        epoch_s, gpu_hours, hours_8 = (number(c) for c in row[1:4])
        assert all(math.isfinite(v) and v > 0 for v in (epoch_s, gpu_hours, hours_8))
        assert gpu_hours == pytest.approx(360 * epoch_s / 3600, rel=0.02)
        assert hours_8 == pytest.approx(gpu_hours / 8, rel=0.02)
        assert row[4:] == ["< 45", "~90"]


def test_tiny_policy_forward_flops_match_the_analytic_count():
    policy = make_policy(TINY, torch.device("cpu"), 32, "full", torch.float32, False)
    side = policy.sample_shape[-1]
    x = torch.randn(2, *policy.sample_shape)
    cond = policy.encode(["a", "b"])
    with torch.no_grad():
        counted = count_flops(lambda: policy.velocity(x, torch.full((2,), 0.5), cond, "old")) / 2
    estimate = analytic_forward_flops(TINY.transformer, side, TINY.text_tokens)
    assert counted == pytest.approx(estimate, rel=0.1)
    assert counted < 2 * sum(p.numel() for p in policy.transformer.parameters()) * ((side // 2) ** 2 + 16)


def test_sd35_medium_forward_flops_at_512px_match_the_analytic_count():
    transformer, _ = build_models(SD35M, torch.device("meta"))
    n_params = sum(p.numel() for p in transformer.parameters())
    # the published 2.5 B counts the 384 x 384 position table, a buffer in diffusers
    assert 2.4e9 < n_params + transformer.pos_embed.pos_embed.numel() < 2.55e9
    counted = transformer_forward_flops(transformer, SD35M, 64, "meta")
    assert counted == pytest.approx(analytic_forward_flops(SD35M.transformer, 64, 333), rel=0.01)
    assert 2.3e12 < counted < 2.6e12  # about 2.4 TFLOP per image per forward at 512 px


def test_cpu_attention_is_counted():
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * (2 * 2 * 3 * 40 * 40 * 16)
