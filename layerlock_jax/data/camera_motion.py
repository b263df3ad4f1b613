"""Camera motion over natural photographs: an embedded, labelled video source with real image
statistics (textures, objects, colour), rendered on demand with no download.

Moving MNIST is two thirds black background, which makes latent targets unusually easy to predict
trivially; here every pixel of every frame is photographic content. The photographs are the ones that
ship inside the scikit-image wheel (`skimage/data/*.png|jpg`) and the scikit-learn wheel
(`sklearn/datasets/images/*.jpg`); they are read with Pillow straight from the installed packages,
without importing either library.

A clip is a virtual camera looking at one photograph:
* `scene` (16 classes): which photograph. Train clips look only at the first half of each photograph
  (along its longer side), test clips only at the second half, so a probe must recognise a texture
  or object from regions it has never seen, not memorise pixels.
* `motion` (10 classes): 0-7 pan, the content moving across the screen towards compass direction
  d * 45 deg (0 = east, counter-clockwise, as in Moving MNIST); 8 zoom in (content grows); 9 zoom out.
* `speed` (3 classes): pans move (1, 2, 3) * image_size / 32 pixels per frame; zooms scale the view by
  ZOOM_RATES per frame.
The start position is uniform over the positions from which the whole trajectory stays inside the
split's half, so there are no borders and no bounces.

Every clip depends only on (seed, split, index) through its own random generator, like the other
synthetic sources: the source is a few ints to pickle, deterministic across processes and restarts.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

import numpy as np

from layerlock_jax.data import synthetic

# (package, file) of each scene class, in label order. Grey photographs are replicated to RGB.
PHOTOS = (
    ("skimage", "astronaut.png"), ("skimage", "brick.png"), ("skimage", "camera.png"),
    ("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "coins.png"),
    ("skimage", "grass.png"), ("skimage", "gravel.png"), ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "ihc.png"), ("skimage", "moon.png"), ("skimage", "motorcycle_left.png"),
    ("skimage", "retina.jpg"), ("skimage", "rocket.jpg"), ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
)
_DATA_DIRS = {"skimage": ("data",), "sklearn": ("datasets", "images")}
_SPLITS = {"train": 0, "test": 1}

_LOCK = threading.Lock()
_CACHE: dict[tuple[int, int], np.ndarray] = {}


def photo_path(package: str, name: str) -> str:
  """Path of a photograph shipped in `package`'s wheel, found without importing the package."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    pip_name = {"skimage": "scikit-image", "sklearn": "scikit-learn"}[package]
    raise FileNotFoundError(f"data.source=camera_motion needs the `{pip_name}` package "
                            f"(it ships the photograph {name})")
  path = os.path.join(list(spec.submodule_search_locations)[0], *_DATA_DIRS[package], name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{package} is installed but its photograph {path} is missing")
  return path


def _region(split_id: int, image_size: int) -> list[np.ndarray]:
  """Per scene, the split's half of the photograph as float32 RGB (rows, cols, 3) in [0, 255],
  resized (antialiased) so that its shorter side is REGION_SIDES * image_size pixels: the camera's
  unzoomed view is then image_size pixels of it, sampled 1:1. Built once per process and size."""
  key = (split_id, image_size)
  if key not in _CACHE:
    with _LOCK:  # grain reads with several threads: build once
      if key not in _CACHE:
        from PIL import Image  # pylint: disable=g-import-not-at-top
        regions = []
        for package, name in PHOTOS:
          with Image.open(photo_path(package, name)) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w >= h:   # halves along the longer side
              box = (0, 0, w // 2, h) if split_id == 0 else (w - w // 2, 0, w, h)
            else:
              box = (0, 0, w, h // 2) if split_id == 0 else (0, h - h // 2, w, h)
            half = im.crop(box)
            hw, hh = half.size
            scale = CameraMotion.REGION_SIDES * image_size / min(hw, hh)
            size = (max(1, round(hw * scale)), max(1, round(hh * scale)))
            regions.append(np.asarray(half.resize(size, Image.Resampling.BOX if scale < 1
                                                  else Image.Resampling.BICUBIC),
                                      dtype=np.float32))
        _CACHE[key] = regions
  return _CACHE[key]


def bilinear_sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """image (H, W, C) sampled at fractional pixel coordinates rows/cols (any equal shapes, inside
  [0, H-1] x [0, W-1]) -> (*shape, C)."""
  h, w = image.shape[:2]
  r0 = np.clip(np.floor(rows).astype(np.int64), 0, h - 2)
  c0 = np.clip(np.floor(cols).astype(np.int64), 0, w - 2)
  fr = (rows - r0)[..., None].astype(np.float32)
  fc = (cols - c0)[..., None].astype(np.float32)
  top = image[r0, c0] * (1 - fc) + image[r0, c0 + 1] * fc
  bottom = image[r0 + 1, c0] * (1 - fc) + image[r0 + 1, c0 + 1] * fc
  return top * (1 - fr) + bottom * fr


class CameraMotion:
  """Pans and zooms of a virtual camera over natural photographs (see the module docstring)."""

  LABELS = {"scene": len(PHOTOS), "motion": 10, "speed": 3}
  DATASET_ID = 3
  PAN_SPEEDS_PER_32PX = (1.0, 2.0, 3.0)
  ZOOM_RATES = (1.02, 1.04, 1.06)  # view scale factor per frame
  REGION_SIDES = 3.0               # the region's shorter side, in unzoomed views

  def __init__(self, num_clips: int, num_frames: int, image_size: int, seed: int, split: str):
    if num_clips < 1 or num_frames < 1:
      raise ValueError(f"num_clips and num_frames must be >= 1, got {num_clips}, {num_frames}")
    if image_size < 8:
      raise ValueError(f"image_size must be >= 8, got {image_size}")
    if split not in _SPLITS:
      raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    # The longest pan must fit in the region: (T - 1) * fastest speed <= (REGION_SIDES - 1) views.
    travel = (num_frames - 1) * max(self.PAN_SPEEDS_PER_32PX) / 32.0
    if travel > self.REGION_SIDES - 1:
      raise ValueError(f"camera_motion supports at most "
                       f"{int((self.REGION_SIDES - 1) * 32 / max(self.PAN_SPEEDS_PER_32PX)) + 1} "
                       f"frames, got num_frames={num_frames}")
    self.num_clips, self.num_frames, self.image_size = num_clips, num_frames, image_size
    self.seed, self.split = seed, split
    self._split_id = _SPLITS[split]

  def __len__(self) -> int:
    return self.num_clips

  def __repr__(self) -> str:
    return (f"CameraMotion(num_clips={self.num_clips}, num_frames={self.num_frames}, "
            f"image_size={self.image_size}, seed={self.seed}, split={self.split!r})")

  def _rng(self, index: int) -> np.random.Generator:
    if not 0 <= index < self.num_clips:
      raise IndexError(f"index {index} out of range for {self.num_clips} clips")
    return np.random.default_rng([self.DATASET_ID, int(self.seed) % 2**64, self._split_id,
                                  int(index)])

  def labels(self, index: int) -> dict[str, np.int32]:
    """The labels of clip `index` without rendering it (cheap)."""
    rng = self._rng(index)
    return {name: np.int32(rng.integers(n)) for name, n in self.LABELS.items()}

  def trajectory(self, index: int, region_shape: tuple[int, int]):
    """(centres (T, 2) as (row, col) in region pixels, view sides (T,)) of clip `index`."""
    rng = self._rng(index)
    labels = {name: int(rng.integers(n)) for name, n in self.LABELS.items()}
    n, t = float(self.image_size), np.arange(self.num_frames, dtype=np.float64)
    if labels["motion"] < 8:
      angle = np.deg2rad(45.0 * labels["motion"])
      step = self.PAN_SPEEDS_PER_32PX[labels["speed"]] * n / 32.0
      # Content moving east/north on screen = the camera moving west/south over the photograph.
      content = np.array([-np.sin(angle), np.cos(angle)]) * step   # (row, col) per frame
      offsets = -content[None, :] * t[:, None]
      sides = np.full(self.num_frames, n)
    else:
      rate = self.ZOOM_RATES[labels["speed"]]
      # Zoom in: the view shrinks by `rate` per frame; zoom out is the same path played backwards.
      power = t if labels["motion"] == 8 else t[::-1]
      sides = n * rate ** -power
      offsets = np.zeros((self.num_frames, 2))
    # Start so that every frame's view (a square of side `sides`, sampled on pixel centres) stays
    # inside [0, H-1] x [0, W-1]: the allowed range of the first centre, per axis.
    half = sides[:, None] / 2.0
    lo = np.max(half - 0.5 - offsets, axis=0)
    hi = np.min(np.array(region_shape, np.float64)[None, :] - 0.5 - half - offsets, axis=0)
    centre0 = lo + rng.random(2) * (hi - lo)
    return centre0[None, :] + offsets, sides

  @synthetic.rendered_once
  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    labels = self.labels(index)
    region = _region(self._split_id, self.image_size)[int(labels["scene"])]
    centres, sides = self.trajectory(index, region.shape[:2])
    n = self.image_size
    # Output pixel i of a view samples the region at centre - side/2 + (i + 0.5) * side / n.
    grid = (np.arange(n, dtype=np.float64) + 0.5) / n - 0.5                 # (n,)
    rows = centres[:, 0, None] + sides[:, None] * grid[None, :]             # (T, n)
    cols = centres[:, 1, None] + sides[:, None] * grid[None, :]
    rr = np.broadcast_to(rows[:, :, None], (self.num_frames, n, n))
    cc = np.broadcast_to(cols[:, None, :], (self.num_frames, n, n))
    video = bilinear_sample(region, rr, cc)
    return {"video": np.clip(np.rint(video), 0, 255).astype(np.uint8),
            **{k: np.int32(v) for k, v in labels.items()}}


def source_from_config(cfg, split: str, seed: int) -> CameraMotion:
  """config.data (source=camera_motion) -> the source of one split."""
  return CameraMotion(cfg.num_clips, cfg.num_frames, cfg.image_size, seed, split)
