"""GenEval's detector on real images without mmcv: Mask2Former (COCO instance segmentation) through
transformers, plus CLIP zero-shot colour, reproducing what the official evaluator computes with mmdet
(djghosh13/geneval `evaluation/evaluate_images.py`; docs/ARCHITECTURE.md section 7), not transformers'
own pre- and post-processing (a 384 x 384 squash, a fixed-size mask resize, no mask threshold).

- input: the RGB image (what mmdet's file route feeds after its BGR -> RGB `to_rgb`), keep-ratio resize
  to (1333, 800) with cv2's bilinear on the uint8 image (mmcv's `imrescale`), ImageNet mean / std,
  zero-padded to a multiple of 32 (`preprocess`);
- instances: score of (query q, class c) = softmax(class logits_q)[c] (no-object dropped) x the mean
  sigmoid mask probability inside the mask; top 100 over all (q, c); mask logits resized bilinearly to
  the padded input, cropped to the resized image, resized to the original size, > 0; box = the tight
  box [x_min, y_min, x_max + 1, y_max + 1] (`instances`);
- colour: the image composited onto grey (153, 153, 153) outside the mask, cropped to the box, CLIP's
  preprocessing (bicubic resize of the shorter side to 224, centre crop, OpenAI mean / std); per class,
  text classifier = mean of the L2-normalised embeddings of GenEval's three templates, re-normalised;
  colour = argmax of 100 x image . text (`ColorClassifier`).
Classes are COCO-80 in mmdet's index order with GenEval's names (`assets/geneval/object_names.txt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from elborl.config import GenEvalConfig
from elborl.errors import UserError
from elborl.rewards.geneval import COLOR_NAMES, Detection

OBJECT_NAMES = Path(__file__).resolve().parents[3] / "assets" / "geneval" / "object_names.txt"
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 (mmdet's img_norm_cfg)
IMAGENET_STD = (58.395, 57.12, 57.375)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SCALE = (1333, 800)  # mmdet's test img_scale: longer side <= 1333, shorter side <= 800
MAX_PER_IMAGE = 100
CROP_BACKGROUND = (153, 153, 153)  # GenEval's bgcolor "#999"
TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")


def geneval_classes(path: str | Path = OBJECT_NAMES) -> list[str]:
    """COCO-80 in mmdet's label order, named as GenEval names them (it renames a few: by index)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def rescale_size(height: int, width: int, scale: tuple[int, int] = SCALE) -> tuple[int, int]:
    """mmcv's keep-ratio size: factor = min(long / max(h, w), short / min(h, w)), each side rounded."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def preprocess(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 RGB (H, W, 3) -> the normalised, padded input (3, H', W') and the resized size (h, w)."""
    import cv2  # mmcv's own resize: cv2 bilinear on the uint8 image, fixed-point, uint8 out

    h, w = rescale_size(*image.shape[:2])
    resized = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_LINEAR)  # (h, w, 3) uint8
    x = torch.from_numpy(resized).permute(2, 0, 1).float()  # (3, h, w)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    pad_h, pad_w = -h % 32, -w % 32  # Pad(size_divisor=32) after Normalize: zeros, bottom and right
    return F.pad(x, (0, pad_w, 0, pad_h)), (h, w)


def mask_to_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """mmdet's mask2bbox: [x_min, y_min, x_max + 1, y_max + 1] of a boolean (H, W) mask; zeros if empty."""
    ys, xs = torch.where(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@dataclass
class Instances:
    """One image's instance predictions (top `MAX_PER_IMAGE` (query, class) pairs).

    Args:
        labels: Class index per instance, (N,).
        scores: Class probability x mask score, (N,).
        masks: Boolean masks at the original size, (N, H, W).
        boxes: Tight boxes of the masks, (N, 4).
    """

    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def instances(class_logits: torch.Tensor, mask_logits: torch.Tensor, resized: tuple[int, int],
              padded: tuple[int, int], original: tuple[int, int], top_k: int = MAX_PER_IMAGE) -> Instances:  # fmt: skip
    """mmdet's Mask2Former instance post-processing of one image.

    Args:
        class_logits: (Q, C + 1), the last entry no-object.
        mask_logits: (Q, h, w) at the pixel decoder's stride.
        resized: The image's size after the keep-ratio resize, (h, w).
        padded: The padded input's size, (H', W').
        original: The image's size, (H, W).
        top_k: (query, class) pairs kept.
    """
    n_cls = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(-1)[:, :-1]  # (Q, C): no-object dropped
    top, index = probs.flatten().topk(min(top_k, probs.numel()))  # (N,), sorted by class probability
    labels, queries = index % n_cls, index // n_cls
    used, inverse = queries.unique(return_inverse=True)
    masks = F.interpolate(mask_logits[used][None].float(), size=padded, mode="bilinear", align_corners=False)
    masks = masks[:, :, : resized[0], : resized[1]]  # the padding removed
    masks = F.interpolate(masks, size=original, mode="bilinear", align_corners=False)[0][inverse]  # (N, H, W)
    binary = masks > 0
    mask_score = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    boxes = torch.tensor([mask_to_box(m) for m in binary]).reshape(-1, 4)
    return Instances(labels, top * mask_score, binary, boxes)


def clip_crop(image: np.ndarray, mask: np.ndarray, box: tuple[float, ...], size: int = 224) -> torch.Tensor:
    """The colour classifier's input: the image on grey outside the mask, cropped to the box, then
    CLIP's preprocessing (bicubic shorter side -> `size`, centre crop, OpenAI mean / std), (3, size, size)."""
    pil = Image.fromarray(image).convert("RGB")
    crop = Image.composite(pil, Image.new("RGB", pil.size, CROP_BACKGROUND), Image.fromarray(mask))
    crop = crop.crop(tuple(box[:4]))  # PIL rounds the float box
    w, h = crop.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)  # torchvision's Resize(size) on the shorter side
    crop = crop.resize((size, new_long) if w <= h else (new_long, size), Image.BICUBIC)
    left, top = round((crop.size[0] - size) / 2.0), round((crop.size[1] - size) / 2.0)  # torchvision CenterCrop
    crop = crop.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(crop, np.float32) / 255.0).permute(2, 0, 1)  # (3, size, size)
    return (x - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


class ColorClassifier:
    """CLIP zero-shot colour of an object crop, one text classifier per class (GenEval's templates).

    Args:
        path: Local transformers CLIP folder (model and tokenizer).
        device: Torch device.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = device
        self.size = self.model.config.vision_config.image_size
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_classifier(self, cls: str) -> torch.Tensor:
        """(10, D): per colour, the mean of the normalised embeddings of the three templates, re-normalised."""
        if cls not in self._text:
            texts = [t.format(c=c, cls=cls) for c in COLOR_NAMES for t in TEMPLATES]
            ids = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            emb = F.normalize(_features(self.model.get_text_features(**ids)), dim=-1)  # (10 * 3, D)
            emb = emb.reshape(len(COLOR_NAMES), len(TEMPLATES), -1).mean(1)  # (10, D)
            self._text[cls] = F.normalize(emb, dim=-1)
        return self._text[cls]

    @torch.no_grad()
    def classify(self, crops: torch.Tensor, cls: str) -> list[str]:
        """Colour names of crops (B, 3, S, S) of objects of class `cls`."""
        image = F.normalize(_features(self.model.get_image_features(pixel_values=crops.to(self.device))), dim=-1)
        logits = 100.0 * image @ self.text_classifier(cls).T  # (B, 10)
        return [COLOR_NAMES[i] for i in logits.argmax(1).tolist()]


def _features(out) -> torch.Tensor:
    """transformers returns the projected features as a tensor (or, in newer versions, an output object)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def check_folder(path: str | None, key: str, what: str) -> Path:
    """A local model folder with config.json and weights, or one UserError naming the param and the content."""
    expected = f"expected a local folder with config.json and *.safetensors ({what})"
    if path is None:
        raise UserError(f"geneval.{key}: {expected}, found none (set it in the params file)")
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{path}: geneval.{key}: {expected}")
    if not any(Path(path).glob("*.safetensors")) and not any(Path(path).glob("*.bin")):
        raise UserError(f"{path}: geneval.{key}: no weights; {expected}")
    return Path(path)


class Mask2FormerDetector:
    """GenEval's official detector (see the module docstring) behind the detector interface.

    Colours are classified only for the detections `select` can keep (score > `min_score`, the top
    `max_objects` of each class): the official evaluator classifies the top-`count` of those, and a
    detection's colour does not depend on which others are classified.

    Args:
        cfg: The `geneval` params section (paths, device, batch size, thresholds).
    """

    name = "mask2former"
    image_size = None

    def __init__(self, cfg: GenEvalConfig):
        from transformers import Mask2FormerForUniversalSegmentation

        model_path = check_folder(cfg.detector_path, "detector_path", "transformers Mask2Former, COCO instance")
        clip_path = check_folder(cfg.clip_path, "clip_path", "transformers CLIP ViT-L/14 with its tokenizer")
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(model_path).to(self.device).eval()
        self.colors = ColorClassifier(clip_path, self.device)
        self.class_names = geneval_classes()
        if self.model.config.num_labels != len(self.class_names):
            raise UserError(f"{model_path}: geneval.detector_path: expected a COCO-80 model, "
                            f"found {self.model.config.num_labels} classes")  # fmt: skip
        self.classes = frozenset(self.class_names)
        self.min_score = min(cfg.threshold, cfg.counting_threshold)
        self.max_objects, self.batch_size = cfg.max_objects, cfg.batch_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]

    @torch.no_grad()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Detections of each image; images of one size share a forward (`batch_size` at a time)."""
        out: list[list[Detection]] = [[] for _ in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                inputs = [preprocess(images[i]) for i in chunk]
                pixels = torch.stack([x for x, _ in inputs]).to(self.device)  # (B, 3, H', W')
                # transformers reads the decoder's per-layer states only when asked (or with aux loss on)
                pred = self.model(pixel_values=pixels, output_hidden_states=not self.model.config.use_auxiliary_loss)
                for j, i in enumerate(chunk):
                    inst = instances(pred.class_queries_logits[j], pred.masks_queries_logits[j], inputs[j][1],
                                     tuple(pixels.shape[-2:]), images[i].shape[:2])  # fmt: skip
                    out[i] = self._detections(images[i], inst)
        return out

    def _detections(self, image: np.ndarray, inst: Instances) -> list[Detection]:
        """Instances as Detections, with the colour of each one `select` can keep."""
        labels, scores = inst.labels.tolist(), inst.scores.tolist()
        colors = ["none"] * len(labels)
        for c in set(labels):
            idx = sorted((k for k, lab in enumerate(labels) if lab == c and scores[k] > self.min_score),
                         key=lambda k: scores[k], reverse=True)[: self.max_objects]  # fmt: skip
            if idx:
                crops = torch.stack([clip_crop(image, inst.masks[k].cpu().numpy(), tuple(inst.boxes[k].tolist()),
                                               self.colors.size) for k in idx])  # fmt: skip
                for k, color in zip(idx, self.colors.classify(crops, self.class_names[c]), strict=True):
                    colors[k] = color
        return [Detection(self.class_names[lab], tuple(inst.boxes[k].tolist()), scores[k], colors[k])
                for k, lab in enumerate(labels)]  # fmt: skip
