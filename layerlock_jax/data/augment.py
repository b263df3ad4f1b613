"""Clip sampling and augmentation for file-backed video (numpy only, deterministic per record).

A decoded video of `n` frames and size (H, W) becomes one or more clips uint8 (T, S, S, 3):

* Temporal: T frames `frame_stride` apart (stride counted in FRAMES, not seconds, as VideoMAE's
  `frame_sample_rate` is; videos of different frame rates therefore play at different speeds). The
  window starts at a uniformly random offset (training) or in the middle of the video ("center",
  evaluation). A video shorter than the window but with at least T frames is sampled with the
  largest stride that fits, (n - 1) // (T - 1), so the clip still spans distinct frames; a video
  with fewer than T frames raises `TooShortError` (the callers skip and count it). We never pad by
  repeating frames: a padded clip looks like a frozen video, which is a silent corruption of the
  training signal.
* Spatial: an Inception-style random resized crop (area fraction `crop_scale`, aspect ratio
  `crop_aspect`, log-uniform) for training, or the largest centred square (evaluation; the same as
  "resize the short side to S, then centre-crop S"), resized to S x S with an antialiased bilinear
  filter and mirrored horizontally with probability 1/2 when `flip` is on.
* Values stay uint8 in [0, 255]: the model and the pixel targets divide by 255 themselves.

Several clips of one decoded video (VideoMAEv2's `num_sample`) draw their offsets, crops and flips
independently. All draws come from one `np.random.Generator` that the pipeline derives from (seed,
stream position), never from global state, so the same seed gives the same clips on any process
count and after a restart. The draw order is fixed (every clip's temporal window first, then every
clip's crop and flip), so a caller that knows `n` before decoding and one that learns it by decoding
get identical clips.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from layerlock_jax.data import synthetic

TEMPORAL_OFFSETS = ("random", "center")
CROPS = ("random_resized", "center")
_AUG_STREAM_ID = 0x5EED_C11B  # keeps augmentation draws apart from any other use of the seed


class TooShortError(ValueError):
  """The video has fewer frames than one clip needs."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """How clips are cut from a decoded video (see the module docstring)."""
  num_frames: int
  image_size: int
  frame_stride: int = 2
  temporal_offset: str = "random"
  crop: str = "random_resized"
  crop_scale: tuple[float, float] = (0.3, 1.0)
  crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  clips_per_video: int = 1

  def __post_init__(self):
    if self.num_frames < 1 or self.image_size < 1 or self.frame_stride < 1:
      raise ValueError(f"num_frames, image_size and frame_stride must be >= 1: {self}")
    if self.temporal_offset not in TEMPORAL_OFFSETS:
      raise ValueError(f"temporal_offset={self.temporal_offset!r}; use one of {TEMPORAL_OFFSETS}")
    if self.crop not in CROPS:
      raise ValueError(f"crop={self.crop!r}; use one of {CROPS}")
    lo, hi = self.crop_scale
    if not 0 < lo <= hi <= 1:
      raise ValueError(f"crop_scale={self.crop_scale} must satisfy 0 < lo <= hi <= 1")
    lo, hi = self.crop_aspect
    if not 0 < lo <= hi:
      raise ValueError(f"crop_aspect={self.crop_aspect} must satisfy 0 < lo <= hi")
    if self.clips_per_video < 1:
      raise ValueError(f"clips_per_video={self.clips_per_video} must be >= 1")

  @property
  def span(self) -> int:
    """Frames covered by one clip at the configured stride."""
    return (self.num_frames - 1) * self.frame_stride + 1

  def for_eval(self) -> "ClipSpec":
    """The deterministic variant used for evaluation: centred window and crop, no flip, 1 clip."""
    return dataclasses.replace(self, temporal_offset="center", crop="center", flip=False,
                               clips_per_video=1)


def _pair(value: Any, name: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"config.data.{name}={value!r} must be a pair (low, high)") from None
  return lo, hi


def spec_from_config(data_cfg) -> ClipSpec:
  """The training ClipSpec from config.data (knobs not in config_defaults are read with .get)."""
  return ClipSpec(
      num_frames=int(data_cfg.num_frames),
      image_size=int(data_cfg.image_size),
      frame_stride=int(data_cfg.get("frame_stride", 2)),
      temporal_offset=str(data_cfg.get("temporal_offset", "random")),
      crop=str(data_cfg.get("crop", "random_resized")),
      crop_scale=_pair(data_cfg.get("crop_scale", (0.3, 1.0)), "crop_scale"),
      crop_aspect=_pair(data_cfg.get("crop_aspect", (3 / 4, 4 / 3)), "crop_aspect"),
      flip=bool(data_cfg.get("flip", True)),
      clips_per_video=int(data_cfg.get("clips_per_video", 1)))


def clip_rng(seed: int, position: int) -> np.random.Generator:
  """The generator for the record at global stream `position` (SeedSequence wants ints >= 0)."""
  return np.random.default_rng([_AUG_STREAM_ID, int(seed) % 2**64, int(position)])


# ------------------------------------------------------------------------------------------------
# Planning: which frames, which box, flipped or not.


def frame_indices(num_available: int, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
  """The T frame indices (int64, increasing) of one clip from a video of `num_available` frames."""
  t = spec.num_frames
  if num_available < t:
    raise TooShortError(f"too short: {num_available} frame(s) < {t} per clip")
  stride = spec.frame_stride
  if spec.span > num_available:
    stride = (num_available - 1) // (t - 1)  # t > 1 here, else span == 1 <= num_available
  span = (t - 1) * stride + 1
  slack = num_available - span
  if spec.temporal_offset == "random":
    start = int(rng.integers(slack + 1))
  else:
    start = slack // 2
  return start + stride * np.arange(t, dtype=np.int64)


class Box(NamedTuple):
  top: int
  left: int
  height: int
  width: int


def crop_box(height: int, width: int, spec: ClipSpec, rng: np.random.Generator) -> Box:
  """A crop window inside a (height, width) frame."""
  if spec.crop == "center":
    side = min(height, width)
    return Box((height - side) // 2, (width - side) // 2, side, side)
  area = height * width
  log_lo, log_hi = math.log(spec.crop_aspect[0]), math.log(spec.crop_aspect[1])
  # Rejection sampling as in Inception / torchvision RandomResizedCrop: ten tries at a box that
  # fits, else the largest centred box whose aspect ratio is clamped into the allowed range. The
  # number of draws is fixed (always 10 x 2 plus 2 offsets), so later draws do not depend on which
  # try succeeded - that keeps the rng stream easy to reason about.
  draws = rng.random((10, 2))
  offsets = rng.random(2)
  for u_scale, u_aspect in draws:
    target = area * (spec.crop_scale[0] + u_scale * (spec.crop_scale[1] - spec.crop_scale[0]))
    aspect = math.exp(log_lo + u_aspect * (log_hi - log_lo))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(offsets[0] * (height - h + 1))
      left = int(offsets[1] * (width - w + 1))
      return Box(min(top, height - h), min(left, width - w), h, w)
  ratio = width / height
  if ratio < spec.crop_aspect[0]:
    w, h = width, int(round(width / spec.crop_aspect[0]))
  elif ratio > spec.crop_aspect[1]:
    h, w = height, int(round(height * spec.crop_aspect[1]))
  else:
    h, w = height, width
  h, w = max(1, min(h, height)), max(1, min(w, width))
  return Box((height - h) // 2, (width - w) // 2, h, w)


class ClipPlan(NamedTuple):
  indices: np.ndarray   # (T,) frame indices into the decoded video
  box: Box
  flip: bool


def plan_temporal(num_available: int, spec: ClipSpec, rng: np.random.Generator
                  ) -> list[np.ndarray]:
  """Frame indices of every clip (first half of the draw order)."""
  return [frame_indices(num_available, spec, rng) for _ in range(spec.clips_per_video)]


def plan_spatial(temporal: Sequence[np.ndarray], height: int, width: int, spec: ClipSpec,
                 rng: np.random.Generator) -> list[ClipPlan]:
  """Crop boxes and flips of every clip (second half of the draw order)."""
  plans = []
  for indices in temporal:
    box = crop_box(height, width, spec, rng)
    flip = bool(rng.random() < 0.5) if spec.flip else False
    plans.append(ClipPlan(indices, box, flip))
  return plans


# ------------------------------------------------------------------------------------------------
# Rendering.


@functools.lru_cache(maxsize=256)
def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
  # Antialiased (triangle filter widened when shrinking) bilinear weights, shared with the
  # synthetic sources; float32 halves the matmul cost and is exact enough for uint8 output.
  w = synthetic.resize_matrix(n_in, n_out).astype(np.float32)
  w.flags.writeable = False
  return w


def render(frames: np.ndarray, box: Box, size: int, flip: bool) -> np.ndarray:
  """Crop `box` out of uint8 frames (T, H, W, 3), resize to (size, size), optionally mirror."""
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
  crop = frames[:, box.top:box.top + box.height, box.left:box.left + box.width]
  if crop.shape[1:3] != (box.height, box.width):
    raise ValueError(f"box {box} does not fit frames of size {frames.shape[1:3]}")
  if (box.height, box.width) == (size, size):
    out = np.ascontiguousarray(crop)
  else:
    rows, cols = _resize_weights(box.height, size), _resize_weights(box.width, size)
    x = np.moveaxis(crop, -1, 1).astype(np.float32)          # (T, 3, h, w)
    y = rows @ x @ cols.T                                     # (T, 3, S, S)
    # Convex weights keep values inside [0, 255]; the clip only guards float rounding.
    out = np.clip(np.rint(np.moveaxis(y, 1, -1)), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(out[:, :, ::-1]) if flip else out
