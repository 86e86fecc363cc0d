"""The shapes world's detector: image -> detections (class, box, score, colour).

Built to judge generated images too, which are blurry, noisy and off-colour. It explains each blob
by synthesis: which world shape, blurred how much, would draw it?
1. Denoise with a small Gaussian; foreground = pixels whose colour is far from the background;
   4-connected components, specks dropped.
2. Colour = the anchor nearest to the median colour of the component's core (its most saturated
   half), so anti-aliased or blurred rims do not vote.
3. Soft mask alpha = (distance from background - noise floor) / (anchor's distance - noise floor).
   A pixel mixing colour c and background at fraction a has alpha = a, and blur moves mass without
   changing it, so the mask's mass and centroid do not depend on blur.
4. For each class k, the box follows from mass and centroid alone: side = sqrt(mass / fill_k), centre =
   centroid - offset_k * side (a triangle's centroid sits below its box centre). The class's shape in
   that box is rendered, blurred with each sigma of a small ladder, and compared with the mask by soft
   IoU (sum min / sum max); a class's fit is its best IoU over sigmas.
5. Class = best fit; score = softmax over classes of fit / temperature (how clearly the class wins)
   x objectness: a ramp on the best fit's IoU times a ramp on the blur it needed. A crisp shape
   scores near 1; a squashed or lumpy one, or a soft blob that only heavy blur explains, scores low.
6. A score that comes out exactly 1.0 (the class wins by a margin that rounds away, full objectness:
   nearly every clean shape) is graded by the fit, 0.9 + 0.1 x best fit IoU (`graded_score`), so
   detections of one class rarely tie and GenEval's order among them is the fit's, not the output
   order. Only a pixel-perfect fit (an axis-aligned square on the pixel grid, IoU 1) still scores 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from elborl.rewards.geneval import Detection
from elborl.world.shapes import SHAPES, coverage
from elborl.world.spec import WorldSpec

SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapesDetectorConfig:
    """Detector constants (tuned on renders with blur and noise; see tests/test_detector.py).

    Args:
        denoise_sigma: Gaussian sigma in pixels applied before thresholding.
        fg_threshold: Foreground where the RGB distance (0-1 scale) from the background exceeds this.
        min_area_frac: Components smaller than this x min_object^2 pixels are specks.
        core_frac: A component's cores are its pixels above this fraction of its peak distance.
        blur_sigmas: Blur ladder (pixels, denoising included) searched when fitting a class.
        sharp_sigma: Fitted blur up to which objectness is untouched.
        blurry_sigma: Fitted blur from which objectness is 0 (a blob, not a drawn shape).
        mask_noise: Least per-pixel std assumed for the soft mask when weighing classes against each
            other (generated images err by more than their pixel noise).
        iou_floor: Best fit at or below which objectness is 0.
        iou_full: Best fit at or above which objectness is 1.
    """

    denoise_sigma: float = 0.6
    fg_threshold: float = 0.2
    min_area_frac: float = 0.25
    core_frac: float = 0.6
    blur_sigmas: tuple[float, ...] = (0.6, 0.9, 1.2, 1.5, 1.9, 2.5, 3.2)
    sharp_sigma: float = 1.6
    blurry_sigma: float = 2.4
    mask_noise: float = 0.15
    iou_floor: float = 0.5
    iou_full: float = 0.75


@cache
def _geometry(cls: str) -> tuple[float, float, float]:
    """(fill, centroid x offset, centroid y offset) of a class in a unit box, offsets from the centre."""
    cov = coverage(cls, 128, supersample=2).astype(np.float64)  # (128, 128)
    grid = (np.arange(128) + 0.5) / 128 - 0.5
    mass = cov.sum()
    return cov.mean(), float((cov.sum(0) * grid).sum() / mass), float((cov.sum(1) * grid).sum() / mass)


def _render(cls: str, cx: float, cy: float, side: float, shape: tuple[int, int]) -> np.ndarray:
    """Coverage of `cls` in the box centred at (cx, cy) with `side`, on a (h, w) pixel window."""
    h, w = shape
    ys = (np.arange(h * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sub-pixel centres, window coordinates
    xs = (np.arange(w * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    v, u = np.meshgrid((ys - cy) / (side / 2), (xs - cx) / (side / 2), indexing="ij")  # (hS, wS)
    inside = SHAPES[cls](u, v).astype(np.float32)
    return inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))  # (h, w)


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-6))


def graded_score(score: float, fit_iou: float) -> float:
    """The detection's confidence: `score` = posterior x objectness, graded by the fit where it saturates.

    score' = 0.9 + 0.1 x fit_iou   if score == 1.0
             score                 otherwise

    `fit_iou` is the soft IoU of the mask with the best synthesis (class and blur), how well the
    synthesis explains the blob. A clean shape wins the class posterior by a margin that rounds to
    exactly 1 and gets full objectness, so nearly every detection used to score 1.0 and tie, leaving
    colour and position verdicts to GenEval's order among ties (`select`). A score of 1.0 needs full
    objectness, hence fit_iou >= `iou_full` (0.75): graded scores lie in [0.975, 1.0], above both of
    GenEval's thresholds (0.3, and 0.9 for counting), so no detection is kept or dropped differently;
    scores below 1.0 are untouched. Pixel-perfect fits (fit_iou 1) still score 1.0 and can tie.
    """
    return 0.9 + 0.1 * fit_iou if score == 1.0 else score


class ShapesDetector:
    """Detector for the embedded world (GenEval's detector interface: image -> detections).

    Args:
        spec: The world (classes, colours, background, canvas size).
        config: Detector constants.
    """

    name = "shapes"

    def __init__(self, spec: WorldSpec, config: ShapesDetectorConfig | None = None):
        self.spec = spec
        self.config = config or ShapesDetectorConfig()
        self.classes = frozenset(spec.classes)
        self.image_size = spec.size
        self._bg = np.asarray(spec.background, np.float32) / 255.0  # (3,)
        self._color_names = list(spec.colors)
        self._anchors = np.asarray(list(spec.colors.values()), np.float32) / 255.0  # (10, 3)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect the objects of one image.

        Args:
            image: uint8 array (H, W, 3), RGB.

        Returns:
            Detections in no particular order.
        """
        cfg = self.config
        x = image.astype(np.float32) / 255.0  # (H, W, 3)
        smooth = ndimage.gaussian_filter(x, sigma=(cfg.denoise_sigma, cfg.denoise_sigma, 0))
        dist = np.linalg.norm(smooth - self._bg, axis=-1)  # (H, W) distance from background
        fg = dist > cfg.fg_threshold
        back = dist[~fg] if (~fg).any() else np.zeros(1)
        floor = float(np.median(back))  # what noise alone reaches
        noise = float(back.std()) / max(float(np.linalg.norm(self._anchors - self._bg, axis=1).mean()), 1e-3)
        labels = self._segment(dist, fg)
        min_area = cfg.min_area_frac * self.spec.min_object**2
        detections = []
        for index, slices in enumerate(ndimage.find_objects(labels), start=1):
            # A window 3 px wider than the component, so blurred edges and the fitted box fit in it.
            ys = slice(max(slices[0].start - 3, 0), min(slices[0].stop + 3, image.shape[0]))
            xs = slice(max(slices[1].start - 3, 0), min(slices[1].stop + 3, image.shape[1]))
            component = labels[ys, xs] == index
            if component.sum() < min_area:
                continue
            det = self._describe(smooth[ys, xs], dist[ys, xs], component, floor, noise, xs.start, ys.start)
            if det is not None:
                detections.append(det)
        return detections

    def _segment(self, dist: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Label objects: 4-connected foreground components, each split at its cores.

        Blur can bridge two nearby objects; within a component, the cores (pixels above `core_frac`
        of the component's peak distance) of distinct objects stay apart, so a component with several
        sizeable cores is split, each pixel going to the nearest core.
        """
        cfg = self.config
        labels, _ = ndimage.label(fg)
        out = np.zeros_like(labels)
        next_label = 1
        min_core = cfg.min_area_frac * self.spec.min_object**2 / 4
        for index, slices in enumerate(ndimage.find_objects(labels), start=1):
            component = labels[slices] == index
            d = dist[slices] * component
            cores, m = ndimage.label(d > cfg.core_frac * d.max())
            sizes = ndimage.sum_labels(np.ones_like(d), cores, index=np.arange(1, m + 1))
            keep = [i + 1 for i, size in enumerate(sizes) if size >= min_core]
            if len(keep) <= 1:
                out[slices][component] = next_label
                next_label += 1
                continue
            seeds = np.isin(cores, keep)
            # Each pixel of the component joins its nearest kept core.
            _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
            nearest = cores[iy, ix]
            for core in keep:
                out[slices][component & (nearest == core)] = next_label
                next_label += 1
        return out

    def _describe(
        self,
        smooth: np.ndarray,
        dist: np.ndarray,
        component: np.ndarray,
        floor: float,
        noise: float,
        x0: int,
        y0: int,
    ) -> Detection | None:
        cfg = self.config
        core = component & (dist >= np.median(dist[component]))
        rgb = np.median(smooth[core], axis=0)  # (3,)
        k = int(np.argmin(np.linalg.norm(self._anchors - rgb, axis=1)))
        # The mask lives on the component grown by 2 px (blurred rims), not on neighbours' pixels.
        region = ndimage.binary_dilation(component, iterations=2)
        scale = max(float(np.percentile(dist[component], 90)) - floor, 1e-3)  # the plateau, not the rim
        alpha = np.clip((dist - floor) / scale, 0, 1) * region  # (h, w)
        mass = float(alpha.sum())
        if mass <= 0:
            return None
        gy, gx = np.indices(alpha.shape) + 0.5  # pixel centres, window coordinates
        my, mx = float((alpha * gy).sum() / mass), float((alpha * gx).sum() / mass)
        sse, ious, sigmas, boxes = [], [], [], []
        for cls in self.spec.classes:
            fill, ox, oy = _geometry(cls)
            side = float(np.sqrt(mass / fill))
            cx, cy = mx - ox * side, my - oy * side
            sharp = _render(cls, cx, cy, side, alpha.shape)
            preds = [ndimage.gaussian_filter(sharp, s) * region for s in cfg.blur_sigmas]
            errs = [float(((alpha - pred) ** 2).sum()) for pred in preds]
            j = int(np.argmin(errs))
            sse.append(errs[j])
            ious.append(_soft_iou(alpha, preds[j]))
            sigmas.append(cfg.blur_sigmas[j])
            boxes.append((x0 + cx - side / 2, y0 + cy - side / 2, x0 + cx + side / 2, y0 + cy + side / 2))
        # Posterior over classes under Gaussian pixel noise of std `mask_noise` (at least the floor).
        logp = -np.asarray(sse) / (2 * max(noise, cfg.mask_noise) ** 2)
        p = np.exp(logp - logp.max())
        best = int(np.argmax(p))
        objectness = np.clip((ious[best] - cfg.iou_floor) / (cfg.iou_full - cfg.iou_floor), 0, 1)
        # A shape only explained by heavy blur is a blob, not a clearly drawn object.
        objectness *= np.clip((cfg.blurry_sigma - sigmas[best]) / (cfg.blurry_sigma - cfg.sharp_sigma), 0, 1)
        score = graded_score(float(p[best] / p.sum() * objectness), ious[best])
        return Detection(self.spec.classes[best], tuple(float(b) for b in boxes[best]), score, self._color_names[k])
