"""The params.yaml schema: one pydantic model per section, every field documented where it is defined.

Each DVC stage reads its own section (plus `world`, which describes the embedded world that every
stage shares). Loading validates the whole file, so a typo anywhere stops a stage before it does any
work, with a message that names the file, the dotted key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from elborl.errors import UserError

ShapeName = Literal["circle", "square", "triangle", "cross", "diamond"]
DetectorName = Literal["shapes", "mask2former"]


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class WorldConfig(Section):
    """The embedded "shapes" world: what scenes look like (docs/ARCHITECTURE.md section 4)."""

    size: int = Field(32, ge=24, le=64, description="Canvas side in pixels; images are size x size RGB.")
    classes: list[ShapeName] = Field(
        default=["circle", "square", "triangle", "cross"],
        min_length=4,
        description="Shape classes of the world, in label order; at least 4, no repeats.",
    )
    background: list[int] = Field(
        [128, 128, 128],
        description="Background RGB (0-255); must be far from all ten colour anchors.",
    )
    min_object: int = Field(9, ge=6, description="Smallest object side in pixels (bounding box).")
    max_object: int = Field(13, ge=6, description="Largest object side in pixels (bounding box).")
    gap: int = Field(2, ge=1, le=8, description="Least free pixels between two objects' boxes.")

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: expected no repeats, found {self.classes}")
        if len(self.background) != 3 or any(not 0 <= c <= 255 for c in self.background):
            raise ValueError(f"background: expected 3 integers in 0..255, found {list(self.background)}")
        if self.min_object > self.max_object:
            raise ValueError(f"min_object: expected <= max_object ({self.max_object}), found {self.min_object}")
        # Four objects of the largest size must fit on a 2 x 2 grid with the gap between them.
        if 2 * self.max_object + 2 * self.gap > self.size:
            raise ValueError(
                f"max_object: expected 2 * max_object + 2 * gap <= size ({self.size}) so that four "
                f"objects fit, found max_object={self.max_object}, gap={self.gap}"
            )
        from elborl.world.spec import WorldSpec  # its checks (the background's distance to the colours) name the file

        try:
            WorldSpec.from_config(self)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("world.")) from None
        return self


class PromptsConfig(Section):
    """The `prompts` stage: GenEval-format train and test prompt sets (the world's, or GenEval's over COCO)."""

    source: Literal["world", "geneval", "ocr"] = Field(
        "world",
        description="world: prompts over the embedded shapes world, split by the fields below; geneval: GenEval's "
        "official 553 test prompts (assets/geneval) and a generated COCO train set, scene-disjoint from them; "
        "ocr: text-rendering prompts for the `ocr` reward (tag `ocr`, target in `text`), text-disjoint splits.",
    )
    seed: int = Field(0, description="Seed of the shuffle that splits scenes into train and test.")
    test_size: int = Field(
        240, ge=6, description="Target number of test prompts, spread over the six tags like GenEval's."
    )
    train_size: int = Field(0, ge=0, description="Cap on train prompts (0 = every prompt not in test).")
    max_test_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="Largest share of one tag's scenes that may go to the test set."
    )
    counting_min: int = Field(2, ge=1, le=4, description="Smallest count in `counting` prompts (GenEval: 2).")
    counting_max: int = Field(4, ge=1, le=4, description="Largest count in `counting` prompts (GenEval: 4).")
    geneval_train_size: int = Field(
        5000,
        ge=1,
        description="source geneval: train prompts, an equal share per tag as far as each tag's scenes not in "
        "the test set allow (the rest to the other tags); drawn with `seed`.",
    )
    ocr_train_size: int = Field(400, ge=1, description="source ocr: train prompts.")
    ocr_test_size: int = Field(100, ge=1, description="source ocr: test prompts.")

    @model_validator(mode="after")
    def _check(self) -> PromptsConfig:
        if self.counting_min > self.counting_max:
            raise ValueError(f"counting_min: expected <= counting_max ({self.counting_max}), found {self.counting_min}")
        return self


class GenEvalConfig(Section):
    """GenEval's scoring options (djghosh13/geneval evaluate_images.py defaults)."""

    detector: DetectorName = Field(
        "shapes",
        description="Detector that turns an image into detections: `shapes` (the embedded world) or "
        "`mask2former` (COCO-80 on real images: Mask2Former + CLIP colour, as GenEval's official evaluator).",
    )
    detector_path: str | None = Field(
        None,
        description="mask2former: local transformers Mask2Former folder (config.json + model.safetensors), e.g. "
        "`elborl geneval convert-mmdet` of the official mmdet checkpoint.",
    )
    clip_path: str | None = Field(
        None,
        description="mask2former: local transformers CLIP ViT-L/14 folder (OpenAI weights; config.json, "
        "model.safetensors, tokenizer files) for the colour classifier.",
    )
    device: str | None = Field(None, description="mask2former's device (None = cuda when available, else cpu).")
    batch_size: int = Field(8, ge=1, description="mask2former: images per detector forward.")
    threshold: float = Field(0.3, ge=0.0, lt=1.0, description="Detection score threshold (all tags but counting).")
    counting_threshold: float = Field(0.9, ge=0.0, lt=1.0, description="Detection score threshold for `counting`.")
    max_objects: int = Field(16, ge=1, description="Most detections kept per class, by score.")
    max_overlap: float = Field(1.0, gt=0.0, le=1.0, description="NMS IoU threshold (1.0 = no NMS, the default).")
    position_threshold: float = Field(
        0.1, ge=0.0, lt=0.5, description="Share of the two boxes' sizes removed from the centre offset."
    )

    @model_validator(mode="after")
    def _check(self) -> GenEvalConfig:
        if self.detector == "mask2former":
            for key in ("detector_path", "clip_path"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: expected a local folder for the mask2former detector, found None")
        return self


class CeilingConfig(Section):
    """The `ceiling` stage: render ground-truth images of the test prompts and score them.

    This measures what a perfect generator would score under the chosen detector: the upper bound of
    every evaluation, and a check that the detector reads the world correctly.
    """

    images_per_prompt: int = Field(4, ge=1, le=64, description="Rendered images per test prompt.")
    seed: int = Field(0, description="Seed of the random layouts.")


SamplerName = Literal["euler", "dpm2", "flow_sde"]


#: The attention projections of SD3's joint blocks (the reference recipe's LoRA targets).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


class ModelConfig(Section):
    """The policy's model, read by every stage that builds one (`base`, `train`, `evaluate`).

    `tiny` is the embedded pixel-space model (`path` = its model folder, the shipped base by default);
    `sd3` is SD3 / SD3.5 from a local diffusers folder (never the hub). Stages build their policy from
    this section through one factory, `elborl.models.build_policy`.
    """

    kind: Literal["tiny", "sd3"] = Field("tiny", description="Model family: the embedded tiny model or SD3 / SD3.5.")
    path: str = Field(
        "assets/base",
        description="Local model folder: a tiny-model folder, or a diffusers SD3 folder (model_index.json, "
        "transformer/, vae/, text_encoder{,_2,_3}/, tokenizer{,_2,_3}/, scheduler/).",
    )
    resolution: int | None = Field(
        None, ge=8, le=4096, description="Image side in pixels (None = the model's own: tiny 32, SD3 from its config)."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16: frozen parts (text encoders, VAE, LoRA's base weights) stored in bf16 and every "
        "forward under bf16 autocast; the trained weights and the optimizer stay fp32.",
    )
    finetune: Literal["full", "lora"] = Field("full", description="Full fine-tuning or LoRA adapters.")
    lora_rank: int = Field(32, ge=1, description="LoRA r.")
    lora_alpha: int = Field(64, ge=1, description="LoRA alpha (scale alpha / r).")
    lora_targets: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS), min_length=1, description="Module names LoRA adapts."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward (less memory).")
    max_sequence_length: int = Field(256, ge=1, le=512, description="T5 tokens of SD3's prompt encoding.")


class BaseConfig(Section):
    """The tiny embedded model and its flow-matching pretraining (`elborl base --train`).

    The pipeline's `base` stage starts from `model.path` (the shipped checkpoint for the tiny model);
    `elborl base --train` regenerates a tiny base from scratch with the settings below.
    """

    patch_size: int = Field(4, ge=1, le=8, description="Transformer patch side in pixels.")
    num_layers: int = Field(6, ge=1, le=24, description="Joint transformer blocks.")
    num_heads: int = Field(4, ge=1, le=32, description="Attention heads.")
    head_dim: int = Field(32, ge=8, le=128, description="Width per attention head.")
    text_hidden: int = Field(128, ge=16, le=1024, description="Text encoder width.")
    text_layers: int = Field(2, ge=1, le=12, description="Text encoder layers.")
    steps: int = Field(20000, ge=1, description="Optimizer steps of pretraining.")
    batch_size: int = Field(64, ge=1, description="Rendered scenes per step.")
    lr: float = Field(5e-4, gt=0, lt=1, description="AdamW peak learning rate (linear warm-up, then constant).")
    warmup: int = Field(500, ge=0, description="Warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="EMA decay (after a (1+k)/(10+k) warm-up) of the saved weights."
    )
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="Share of empty prompts (enables CFG).")
    corpus: Literal["prompts", "web"] = Field(
        "web",
        description="Pretraining data: `prompts` = scenes of the RL train prompts, captioned by the prompt; "
        "`web` = random scenes of every kind with vague or wrong captions (elborl/world/corpus.py).",
    )
    caption_omit: float = Field(0.3, ge=0, le=1, description="`web`: chance each attribute is left unsaid.")
    caption_misstate: float = Field(0.15, ge=0, le=1, description="`web`: chance a stated attribute is wrong.")
    caption_drop_object: float = Field(
        0.15, ge=0, le=1, description="`web`: chance a two-object caption names only one object."
    )
    logit_mean: float = Field(0.0, description="Mean of the logit-normal timestep density (SD3).")
    logit_std: float = Field(1.0, gt=0, description="Std of the logit-normal timestep density.")
    checkpoint_every: int = Field(250, ge=1, description="Steps between resumable checkpoints.")
    eval_every: int = Field(1000, ge=1, description="Steps between strict test-GenEval measurements.")
    eval_images_per_prompt: int = Field(1, ge=1, description="Images per test prompt when measuring.")
    eval_min_images_per_tag: int = Field(
        32, ge=0, description="More images per prompt in small tags, so each tag mean rests on this many images."
    )
    eval_sampler: SamplerName = Field("dpm2", description="Sampler used to measure the base.")
    eval_steps: int = Field(10, ge=1, description="Sampler steps used to measure the base.")
    seed: int = Field(0, description="Seed of initialisation, data and timesteps.")


class TrainConfig(Section):
    """The `train` stage: RL fine-tuning, every point of the design space (docs/ARCHITECTURE.md section 2)."""

    estimator: Literal["elbo", "trajectory"] = Field("elbo", description="Likelihood estimator.")
    objective: Literal["epg", "epg_noratio", "pepg", "pepg_noratio", "par", "par_noratio", "grpo", "nft"] = Field(
        "epg", description="Policy-gradient objective (`nft` = DiffusionNFT, on the ELBO's forward process)."
    )
    sampler: SamplerName = Field("dpm2", description="Rollout sampler (`trajectory` needs flow_sde).")
    steps: int = Field(10, ge=1, le=1000, description="Rollout sampler steps N.")
    shift: float = Field(1.0, gt=0, description="Timestep shift of the rollout grid.")
    cfg_scale: float = Field(1.0, ge=1.0, description="Rollout CFG scale (1.0 = off, the reference).")
    noise_level: float = Field(0.7, ge=0, description="flow_sde noise level a.")
    weighting: Literal["adaptive", "simple", "path_kl"] = Field("adaptive", description="ELBO weighting.")
    elbo_timesteps: Literal["grid", "uniform"] = Field("grid", description="ELBO timesteps: sampler grid or U(0,1].")
    elbo_k: int | None = Field(None, ge=1, description="ELBO terms per sample (None = floor(0.99 N)).")
    advantages: Literal["exact", "standard"] = Field("exact", description="Advantage estimator.")
    adv_scale: float = Field(0.1, gt=0, description="`exact` advantages: A = adv_scale (r - group mean).")
    per_group_std: bool = Field(False, description="`standard` advantages: std per group instead of the batch.")
    clip_eps: float = Field(1e-3, gt=0, lt=1, description="`grpo` ratio clip (1e-4 in FlowGRPO's trajectory recipe).")
    grpo_adv_clip: float = Field(5.0, gt=0, description="`grpo` clamps advantages to +-this.")
    nft_beta: float = Field(0.1, gt=0, le=1, description="DiffusionNFT's beta (reference code 0.1).")
    nft_adv_max: float = Field(5.0, gt=0, description="DiffusionNFT's advantage clamp.")
    beta_kl: float = Field(
        1e-3,
        ge=0,
        description="KL-to-base weight (independent of adv_scale). 1e-3: over 100 epochs from the shipped base "
        "it holds the KL near 0.01 and the background drift under 2x the base's, and climbs higher than 1e-4 "
        "(bench/results/diagnosis, session 10).",
    )
    lr: float = Field(
        5e-5,
        gt=0,
        lt=1,
        description="AdamW learning rate (the reference's 3e-4 is for LoRA; full fine-tuning of "
        "the tiny model drifts at >= 1e-4, bench/learning.py; 5e-5 climbs twice as fast as 2e-5 from the "
        "shipped base, bench/results/diagnosis).",
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(5.0, gt=0, description="Gradient-norm clip.")
    optimizer_steps: int = Field(4, ge=1, description="Optimizer steps per epoch (the batch is split evenly).")
    micro_batch: int = Field(64, ge=1, description="Samples per forward/backward piece.")
    decay_rate: float = Field(0.001, ge=0, le=1, description="Sampling policy: d = min(decay_rate * step, decay_max).")
    decay_max: float = Field(0.5, ge=0, le=1, description="Sampling policy: largest d.")
    ema_decay: float = Field(0.9, ge=0, lt=1, description="EMA of the trained weights (FlowGRPO warm-up).")
    reward: str | dict[str, float] = Field(
        "geneval",
        description="Training reward: a registered name (`geneval` = partial credit, `geneval_strict`, "
        "`pickscore`, `clipscore`, `hpsv2`, `aesthetic`, `ocr`, `unifiedreward`; `partial` / `strict` are the "
        "two GenEval ones) or a weighted mix {name: weight} (a plain weighted sum of raw scores).",
    )
    prompts_per_epoch: int = Field(16, ge=1, description="P prompts per epoch.")
    tag_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Relative weight of each prompt tag in an epoch's draw (a tag not named: 1; {} = every tag "
        "equally often), e.g. {single_object: 0.5, counting: 2}: fewer samples where the base already "
        "succeeds, more where it fails.",
    )
    group_size: int = Field(8, ge=2, description="G images per prompt (a group).")
    epochs: int = Field(100, ge=1, description="Epochs (100: `make run` in 25-33 min on 2 cores, install included).")
    seed: int = Field(0, description="Seed of prompts, noise and timesteps.")
    eval_every: int = Field(10, ge=0, description="Strict test GenEval of the EMA weights every E epochs (0 = off).")
    eval_images_per_prompt: int = Field(1, ge=1, description="Images per test prompt in that evaluation.")
    eval_min_images_per_tag: int = Field(16, ge=0, description="At least this many images behind each tag mean.")
    checkpoints: str = Field(
        "build/checkpoints", description="Root of epoch checkpoints and cached task results (local or s3://)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept per run (older ones are deleted).")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        from elborl.rewards.registry import check_reward_spec

        check_reward_spec(self.reward)
        if self.estimator == "trajectory" and self.sampler != "flow_sde":
            raise ValueError(f"sampler: expected flow_sde for the trajectory estimator, found {self.sampler!r}")
        if self.estimator == "trajectory" and self.noise_level == 0:
            raise ValueError("noise_level: expected > 0 for the trajectory estimator (a = 0 has no log-prob), found 0")
        if self.estimator == "trajectory" and self.objective == "nft":
            raise ValueError("objective: expected a log-likelihood objective for the trajectory estimator, found 'nft'")
        return self


class ModelRewardConfig(Section):
    """A reward computed by a local model: where its weights are and how it runs."""

    path: str | None = Field(None, description="Local weights (folder or file, per reward); None = not configured.")
    batch_size: int = Field(16, ge=1, description="Images per forward.")
    device: str | None = Field(None, description="Torch device (None = cuda when available, else cpu).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Compute dtype of the reward model.")


class ClipRewardConfig(ModelRewardConfig):
    """A reward on top of a CLIP model that needs a second local folder."""

    clip_path: str | None = Field(
        None, description="aesthetic: CLIP ViT-L/14 folder; hpsv2: a CLIP tokenizer folder (CLIP's BPE)."
    )


class UnifiedRewardConfig(Section):
    """An OpenAI-compatible chat endpoint serving UnifiedReward (sglang / vLLM)."""

    url: str | None = Field(None, description="Base URL, e.g. http://127.0.0.1:30000/v1; None = not configured.")
    model: str = Field("UnifiedReward", description="Model name sent in the request.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (never the key).")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    retries: int = Field(3, ge=1, description="Attempts per image before the reward fails.")
    max_tokens: int = Field(512, ge=1, description="Completion tokens per request.")
    concurrency: int = Field(8, ge=1, description="Requests in flight.")


class RewardsConfig(Section):
    """Settings of each registered reward (`elborl.rewards.registry`); `train.reward` chooses and weighs them."""

    pickscore: ModelRewardConfig = Field(default_factory=ModelRewardConfig, description="PickScore_v1 folder.")
    clipscore: ModelRewardConfig = Field(default_factory=ModelRewardConfig, description="CLIP ViT-L/14 folder.")
    hpsv2: ClipRewardConfig = Field(default_factory=ClipRewardConfig, description="HPS v2.1 checkpoint (.pt).")
    aesthetic: ClipRewardConfig = Field(default_factory=ClipRewardConfig, description="LAION aesthetic MLP weights.")
    ocr: ModelRewardConfig = Field(default_factory=ModelRewardConfig, description="OCR (weights in its wheel).")
    unifiedreward: UnifiedRewardConfig = Field(default_factory=UnifiedRewardConfig, description="The endpoint.")


class TrackingConfig(Section):
    """MLflow tracking and registry (shared by the stages that log)."""

    uri: str = Field(
        "sqlite:///mlflow.db", description="sqlite:///FILE (default, in the project) or http(s)://HOST:PORT."
    )
    artifact_root: str | None = Field(
        None, description="Where experiments keep artifacts (local or s3://); None = MLflow's."
    )
    experiment: str = Field("elborl", description="MLflow experiment name.")
    model_name: str = Field("elborl-tiny", description="Registered model name for evaluated checkpoints.")
    alias: str = Field("champion", description="Alias moved to a version that beats the holder's overall GenEval.")


class EvaluateConfig(Section):
    """The `evaluate` stage: strict GenEval of the trained EMA checkpoint and of the base, side by side."""

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        from elborl.rewards.registry import reward_weights

        try:
            reward_weights(dict.fromkeys(self.rewards, 1.0)) if self.rewards else None
        except ValueError as err:
            raise ValueError(str(err).replace("reward:", "rewards:", 1)) from None
        return self

    images_per_prompt: int = Field(4, ge=1, description="Images per test prompt (GenEval: 4).")
    min_images_per_tag: int = Field(32, ge=0, description="At least this many images behind each tag mean.")
    sampler: SamplerName = Field("dpm2", description="Sampler (an ODE; CFG off as in training).")
    steps: int = Field(10, ge=1, le=1000, description="Sampler steps.")
    shift: float = Field(1.0, gt=0, description="Timestep shift of the sampler's grid (SD3.5's scheduler: 3).")
    seed: int = Field(0, description="Noise seed of the evaluation images.")
    grid_prompts: int = Field(16, ge=1, le=256, description="Test prompts shown in the sample grid.")
    base_cfg_scale: float | None = Field(
        4.5,
        ge=1.0,
        description="Also score the base sampled WITH classifier-free guidance at this scale (`base_cfg`), the "
        "study's comparison: RL without CFG against the base with it (SD3.5's default 4.5); null to skip.",
    )
    rewards: list[str] = Field(
        default_factory=list,
        description="Registered rewards (`rewards` section) whose means on the test images are reported for the "
        "base and the trained model, beside GenEval (e.g. [pickscore, ocr]).",
    )
    register_model: bool = Field(True, description="Register the EMA checkpoint in MLflow's model registry.")


class StorageConfig(Section):
    """How to reach S3 for s3:// paths. Credentials come from the environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY), never from params."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; None = AWS_ENDPOINT_URL or AWS.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds before a connection attempt fails.")
    retries: int = Field(3, ge=1, description="Attempts per S3 request.")

    def options(self):
        from elborl.storage import StorageOptions

        return StorageOptions(self.endpoint_url, connect_timeout=self.connect_timeout, retries=self.retries)


class RunnerConfig(Section):
    """Where an epoch's rollouts and rewards run (the `train` stage's Prefect task runner): in the
    training process, or as shard tasks on Dask or Ray workers (docs/ARCHITECTURE.md section 8). The
    update always runs in the training process(es); a sharded epoch equals an in-process one."""

    kind: Literal["inline", "dask", "ray"] = Field(
        "inline", description="inline (in the training process), dask (prefect-dask) or ray (prefect-ray, the "
        "`ray` extra).")  # fmt: skip
    n_workers: int = Field(2, ge=1, description="Workers of the local Dask cluster started when `address` is null.")
    threads_per_worker: int | None = Field(None, ge=1, description="Torch threads per local worker (null: "
                                           "cores / n_workers).")  # fmt: skip
    address: str | None = Field(None, description="An existing scheduler (tcp://host:8786, ray://host:10001); "
                                "null = a local cluster for the run.")  # fmt: skip
    shards: int | None = Field(None, ge=1, description="Rollout and reward shards per epoch (null: n_workers).")
    gpus_per_shard: float = Field(0, ge=0, description="GPUs a rollout shard asks for (Dask resource `GPU`, Ray "
                                  "num_gpus); start GPU workers with `dask worker ... --resources GPU=1`.")  # fmt: skip
    device: str | None = Field(None, description="Torch device of the shard tasks (null: cuda when the worker "
                               "has one).")  # fmt: skip


class ScheduleConfig(Section):
    """`elborl serve`: a Prefect deployment that runs the pipeline (`dvc repro`) on a cron schedule."""

    name: str = Field("elborl-pipeline", description="Deployment name.")
    cron: str = Field("0 3 * * *", description="Cron schedule (server time zone UTC).")
    project_dir: str = Field(".", description="The project folder the scheduled runs reproduce.")
    targets: list[str] = Field(default_factory=list, description="Stages to reproduce (empty = the whole graph).")


class Params(Section):
    """All of params.yaml. Sections = DVC stages, plus `world` and `geneval` that stages share."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The embedded world.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy's model (tiny or SD3).")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="`prompts` stage.")
    geneval: GenEvalConfig = Field(default_factory=GenEvalConfig, description="GenEval scoring options.")
    ceiling: CeilingConfig = Field(default_factory=CeilingConfig, description="`ceiling` stage.")
    base: BaseConfig = Field(default_factory=BaseConfig, description="`base` stage and pretraining.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="`train` stage: RL fine-tuning.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="`evaluate` stage.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking and registry.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="S3 access for s3:// paths.")
    rewards: RewardsConfig = Field(default_factory=RewardsConfig, description="Each reward's settings.")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Where rollouts and rewards run.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Scheduled pipeline runs.")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` (the parent of an unknown key), for the error message."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] = Params) -> str:
    """One line per problem: `<file>: <dotted.key>: expected ..., found ...`."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) if str(p).isprintable() else repr(p) for p in loc) or "<top level>"  # one line
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{source}: {key}: unknown key{hint}; expected one of: {', '.join(allowed)}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        field, sep, rest = msg.partition(": expected ")
        if sep and field.isidentifier():  # a model validator naming its own field
            key = f"{key}.{field}" if loc else field
            lines.append(f"{source}: {key}: expected {rest}")
            continue
        expected = msg.removeprefix("Input should be ").removeprefix("Input ")
        expected = expected[0].lower() + expected[1:]
        lines.append(f"{source}: {key}: expected {expected}, found {e['input']!r}")
    return "\n".join(lines)


def parse_params(data: Any, source: str = "<params>") -> Params:
    """Validate a params mapping (already parsed from YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections, found {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Args:
        path: The params file. Sections absent from it take their defaults.

    Raises:
        UserError: The file is missing, is not YAML, or fails validation (message names file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as err:  # one line: the problem and where, not PyYAML's multi-line excerpt
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = ": ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or str(err)
        raise UserError(f"{path}: not valid YAML{where}: {' '.join(what.split())}") from None
    except (ValueError, KeyError, IndexError) as err:  # PyYAML's scalar constructors: a date 2024-13-01, `!!int x`
        raise UserError(f"{path}: not valid YAML: cannot construct a value ({' '.join(str(err).split())})") from None
    return parse_params(data, str(path))


def route_overrides(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat overrides (e.g. a benchmark's `--set finetune=lora lr=3e-4`) grouped by the section that
    defines each key: `model` for the model's keys, `train` for everything else."""
    out: dict[str, dict[str, Any]] = {"train": {}, "model": {}}
    for key, value in values.items():
        out["model" if key in ModelConfig.model_fields else "train"][key] = value
    return out
