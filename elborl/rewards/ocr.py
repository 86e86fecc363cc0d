"""The `ocr` reward: how well an image renders the text that its prompt quotes (FlowGRPO's OCR reward).

Formula (yifan123/flow_grpo, `flow_grpo/ocr.py`, `OcrScorer.__call__`, called by `ocr_score` in
`flow_grpo/rewards.py`), per image:

    target     = prompt.split('"')[1].replace(" ", "").lower()    # the first quoted span
    recognised = "".join(text of each detected line, in reading order).replace(" ", "").lower()
    d          = 0 if target in recognised else Levenshtein(recognised, target)
    reward     = 1 - min(d, len(target)) / len(target)             # in [0, 1]

- Target: the text between the prompt's first and second straight double quote (with one quote only,
  everything after it, as `split('"')[1]` gives). Only spaces are removed, then the text is lower-cased.
- Recognised text: the OCR lines (top-to-bottom, left-to-right) concatenated with no separator; lines the
  recogniser scores below 0.5 are dropped (PaddleOCR's default `drop_score`; FlowGRPO's own `> 0` filter
  then keeps all). No text found -> "" -> reward 0.
- The target appearing anywhere in the recognised text counts as exact (extra text costs nothing), and
  the distance is capped at len(target), so unrelated text never scores below 0.

Where it differs from FlowGRPO (all on failure paths, by design of this project's reward interface):
- A prompt with no double quote: FlowGRPO's `split('"')[1]` raises IndexError for the whole batch; here a
  `RewardError` naming the prompt is raised. An empty target (`""`): FlowGRPO divides by zero; here a
  `RewardError` too.
- An OCR engine failure: FlowGRPO prints it and scores the image 0; here it propagates, and `RewardMix`
  reports it as a `RewardError` naming the reward (a broken backend is never a silent 0).

Engine: RapidOCR (`rapidocr-onnxruntime`), whose wheel ships PP-OCRv4 detection and recognition ONNX weights,
so it runs offline with no download (FlowGRPO uses PaddleOCR with lang="en"; RapidOCR's recogniser is the
Chinese-English PP-OCRv4 model). As in FlowGRPO: no angle classifier (`use_angle_cls=False`); detection
resizes the long side to at most 960 px (PaddleOCR's `det_limit_side_len=960`, `det_limit_type="max"`). Images
are given to the engine in BGR order, its convention (FlowGRPO hands it RGB arrays as they are). The engine
is loaded once per process and device; `rewards.ocr.device` picks CPU or CUDA (None = CUDA when
onnxruntime has the CUDA provider); `batch_size`, `dtype` and `path` are unused (one image per call, float32
weights from the wheel).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from elborl.errors import UserError
from elborl.rewards.registry import RewardContext, RewardError, RewardFn, RewardResult

PACKAGE = "rapidocr-onnxruntime"
#: Engine options (see the module docstring): no angle classifier, PaddleOCR's detection size and drop score.
ENGINE_OPTIONS: dict[str, Any] = {
    "use_cls": False,
    "text_score": 0.5,
    "det_limit_type": "max",
    "det_limit_side_len": 960,
}

_ENGINES: dict[bool, Any] = {}  # use_cuda -> RapidOCR, one per process
_LOCK = threading.Lock()


def levenshtein(a: str, b: str) -> int:
    """Edit distance between two strings (insertions, deletions and substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    """FlowGRPO's normalisation: spaces removed, lower-cased."""
    return text.replace(" ", "").lower()


def target_text(prompt: str) -> str:
    """The prompt's first quoted span, normalised (see the module docstring).

    Raises:
        RewardError: No double quote in the prompt, or an empty quoted span.
    """
    parts = prompt.split('"')
    if len(parts) < 2:
        raise RewardError(f'reward ocr: expected a prompt with a "quoted" text to render, found {prompt!r}')
    target = normalise(parts[1])
    if not target:
        raise RewardError(f"reward ocr: expected a non-empty quoted text in the prompt, found {prompt!r}")
    return target


def text_reward(recognised: str, target: str) -> tuple[float, int]:
    """(reward, distance) of already normalised recognised text against a non-empty normalised target."""
    dist = 0 if target in recognised else min(levenshtein(recognised, target), len(target))
    return 1.0 - dist / len(target), dist


def _use_cuda(device: str | None) -> bool:
    import onnxruntime

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device is None:
        return has_cuda
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        if not has_cuda:
            raise UserError(
                f"reward ocr: rewards.ocr.device is {device!r} but onnxruntime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu, or set device: cpu)"
            )
        return True
    raise UserError(f"reward ocr: rewards.ocr.device: expected cpu, cuda or None, found {device!r}")


def load_engine(device: str | None = "cpu") -> Any:
    """The process's RapidOCR engine for a device (built on first use).

    Raises:
        UserError: The engine's package is missing or broken (names the package to install), or a CUDA device
            without onnxruntime's CUDA provider.
    """
    try:
        from rapidocr_onnxruntime import RapidOCR
    except Exception as err:  # ImportError, or a broken native dependency (onnxruntime, opencv)
        raise UserError(
            f"the ocr reward needs the OCR engine: pip install {PACKAGE} ({type(err).__name__}: {err})"
        ) from None
    cuda = _use_cuda(device)
    with _LOCK:
        if cuda not in _ENGINES:
            options = dict(ENGINE_OPTIONS)
            if cuda:
                options.update(det_use_cuda=True, rec_use_cuda=True)
            _ENGINES[cuda] = RapidOCR(**options)
        return _ENGINES[cuda]


def recognise(engine: Any, image: np.ndarray) -> str:
    """The engine's text of one RGB uint8 (H, W, 3) image: its lines joined in reading order, not normalised."""
    result, _ = engine(np.ascontiguousarray(image[..., ::-1]))  # RGB -> BGR
    return "".join(line[1] for line in result or [])


def ocr(ctx: RewardContext) -> RewardFn:
    """FlowGRPO's OCR reward in [0, 1] (formula and source in the module docstring); details per image:
    the recognised text (raw), the normalised target and the capped edit distance."""
    engine = load_engine(ctx.settings.ocr.device)

    def reward(images: np.ndarray, metadata: list[dict]) -> RewardResult:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (B, H, W, 3), found {images.dtype} {images.shape}")
        if len(images) != len(metadata):
            raise ValueError(f"expected one metadata row per image, found {len(metadata)} for {len(images)}")
        targets = [target_text(meta["prompt"]) for meta in metadata]  # all checked before any OCR
        scores, details = [], []
        for image, target in zip(images, targets, strict=True):
            text = recognise(engine, image)
            score, dist = text_reward(normalise(text), target)
            scores.append(score)
            details.append({"ocr_text": text, "target": target, "distance": dist})
        return RewardResult(np.asarray(scores, dtype=np.float64), details)

    return reward
