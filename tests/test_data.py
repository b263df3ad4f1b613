"""Tests of the embedded labelled datasets and the grain input pipeline.

The checks measure properties of the rendered pixels with independent numpy code (correlation with
the MNIST file read here, intensity centroids, FFT orientation/phase, channel statistics) and compare
them with the labels' documented meaning; pipeline checks identify clips by their content.
"""
import gzip
import json
import pickle

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from layerlock_jax.data import pipeline, subsets, synthetic

# Documented label meanings (synthetic.py docstrings), restated so the tests pin the spec.
SPEEDS_PX_AT_32 = (1.0, 2.0, 3.0)
SPATIAL_FREQS = (2.0, 3.0, 4.0, 6.0)          # cycles per image width
TEMPORAL_FREQS = (1 / 16, 1 / 8, 3 / 16, 1 / 4)  # cycles per frame
CONTRASTS = (0.25, 0.5, 1.0)
COLOURS = ((1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0.5, 0))


def data_cfg(source="moving_mnist", num_clips=64, num_frames=4, image_size=16):
  c = ml_collections.ConfigDict()
  c.source, c.num_clips, c.num_frames, c.image_size = source, num_clips, num_frames, image_size
  c.path, c.num_workers, c.prefetch = "", 0, 2
  return c


# ------------------------------------------------------------------------------------------------
# Sources: format, determinism, balance.


@pytest.mark.parametrize("cls", [synthetic.MovingMNIST, synthetic.Gratings])
def test_source_format_and_label_ranges(cls):
  src = cls(num_clips=20, num_frames=3, image_size=16, seed=0, split="train")
  assert len(src) == 20
  for i in range(20):
    item = src[i]
    assert set(item) == {"video"} | set(cls.LABELS)
    assert item["video"].dtype == np.uint8 and item["video"].shape == (3, 16, 16, 3)
    for name, n in cls.LABELS.items():
      assert item[name].dtype == np.int32 and 0 <= item[name] < n
  with pytest.raises(IndexError):
    src[20]


@pytest.mark.parametrize("cls", [synthetic.MovingMNIST, synthetic.Gratings])
def test_source_deterministic_per_seed_split_index(cls):
  a = cls(num_clips=8, num_frames=3, image_size=16, seed=5, split="train")
  b = pickle.loads(pickle.dumps(cls(num_clips=8, num_frames=3, image_size=16, seed=5,
                                    split="train")))
  other_seed = cls(num_clips=8, num_frames=3, image_size=16, seed=6, split="train")
  other_split = cls(num_clips=8, num_frames=3, image_size=16, seed=5, split="test")
  for i in [7, 0, 3]:  # order of access must not matter
    np.testing.assert_array_equal(a[i]["video"], b[i]["video"])
  for other in (other_seed, other_split):
    assert sum(np.array_equal(a[i]["video"], other[i]["video"]) for i in range(8)) == 0
  # Clips within one split differ from each other too.
  assert not np.array_equal(a[0]["video"], a[1]["video"])


@pytest.mark.parametrize("cls,n", [(synthetic.MovingMNIST, 500), (synthetic.Gratings, 600)])
def test_labels_roughly_balanced(cls, n):
  src = cls(num_clips=n, num_frames=1, image_size=16, seed=1, split="train")
  items = [src[i] for i in range(n)]
  for name, k in cls.LABELS.items():
    counts = np.bincount([it[name] for it in items], minlength=k)
    assert counts.size == k
    expected = n / k
    # A uniform draw keeps every class within +-50% of n/k here (>= 40 expected per class).
    assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected, (name, counts)


def test_make_source_dispatch_and_error():
  assert isinstance(synthetic.make_source(data_cfg("moving_mnist"), "train", 0),
                    synthetic.MovingMNIST)
  g = synthetic.make_source(data_cfg("gratings", num_clips=7, num_frames=5, image_size=24),
                            "test", 3)
  assert isinstance(g, synthetic.Gratings)
  assert (len(g), g[0]["video"].shape) == (7, (5, 24, 24, 3))
  with pytest.raises(ValueError,
                     match=r"config\.data\.source.*gratings.*moving_mnist.*video_folder"):
    synthetic.make_source(data_cfg("webdataset"), "train", 0)
  with pytest.raises(ValueError, match="split"):
    synthetic.make_source(data_cfg("gratings"), "validation", 0)


# ------------------------------------------------------------------------------------------------
# Moving MNIST content.


def _read_mnist_file():
  """Independent reader of the csv.gz: (images float [5000, 28, 28], labels [5000])."""
  with gzip.open(synthetic.mnist_csv_path(), "rb") as f:
    rows = [np.array(line.split(b","), dtype=np.int64) for line in f.read().splitlines()]
  table = np.stack(rows)
  return table[:, :784].reshape(-1, 28, 28).astype(np.float64), table[:, 784]


def _centroid(img):
  """Intensity centroid (row, col) of a 2-D image."""
  img = np.asarray(img, np.float64)
  mass = img.sum()
  return np.array([(img.sum(1) * np.arange(img.shape[0])).sum(),
                   (img.sum(0) * np.arange(img.shape[1])).sum()]) / mass


def test_moving_mnist_digit_pixels_come_from_the_mnist_file():
  """At 56 px the digit patch is 28 px, i.e. the MNIST image unresized, placed at a sub-pixel offset.

  Forward model (documented rendering): bilinear placement preserves the centroid, so each candidate
  MNIST image j predicts its own offset (frame centroid - image centroid) and hence the frame. Exactly
  one image must reproduce frame 0 to rounding error; it must have the labelled class and belong to
  the clip's split (first 400 images per class: train, last 100: test).
  """
  images, labels = _read_mnist_file()
  assert images.shape == (5000, 28, 28) and np.all(np.bincount(labels) == 500)
  rank_in_class = np.empty(5000, int)
  for d in range(10):
    rank_in_class[labels == d] = np.arange(500)
  image_centroids = np.stack([_centroid(im) for im in images])  # (5000, 2)
  for split in ("train", "test"):
    src = synthetic.MovingMNIST(num_clips=4, num_frames=1, image_size=56, seed=2, split=split)
    for i in range(4):
      item = src[i]
      assert np.array_equal(item["video"][..., 0], item["video"][..., 2])  # grey as RGB
      frame = np.pad(item["video"][0, :, :, 0].astype(np.float64), ((0, 1), (0, 1)))
      offset = _centroid(frame) - image_centroids          # (5000, 2) predicted top-left corner
      base = np.floor(offset).astype(int)
      frac = (offset - base)[:, :, None, None]
      valid = np.all((base >= 0) & (base <= 28), axis=1)
      fr, fc = frac[:, 0], frac[:, 1]
      pred = np.zeros((5000, 29, 29))
      pred[:, :28, :28] += (1 - fr) * (1 - fc) * images
      pred[:, 1:, :28] += fr * (1 - fc) * images
      pred[:, :28, 1:] += (1 - fr) * fc * images
      pred[:, 1:, 1:] += fr * fc * images
      windows = np.lib.stride_tricks.sliding_window_view(frame, (29, 29))
      b = np.clip(base, 0, 28)
      err = np.abs(windows[b[:, 0], b[:, 1]] - pred).max(axis=(1, 2))
      err[~valid] = np.inf
      best, second = np.argsort(err)[:2]
      assert err[best] <= 1.5 and err[second] > 50.0, (err[best], err[second])
      assert labels[best] == item["digit"]
      assert (rank_in_class[best] < 400) == (split == "train")


def _centroids(video):
  """Intensity centroids (row, col) per frame of a grey clip."""
  v = video[..., 0].astype(np.float64)
  rows, cols = np.arange(v.shape[1]), np.arange(v.shape[2])
  mass = v.sum(axis=(1, 2))
  return np.stack([(v.sum(axis=2) * rows).sum(1) / mass, (v.sum(axis=1) * cols).sum(1) / mass], 1)


def test_moving_mnist_motion_matches_direction_and_speed_labels():
  """Labels describe the motion between frames 0 and 1 (no bounce there, by construction)."""
  size, n = 32, 40
  src = synthetic.MovingMNIST(num_clips=n, num_frames=2, image_size=size, seed=3, split="train")
  for i in range(n):
    item = src[i]
    d_row, d_col = np.diff(_centroids(item["video"]), axis=0)[0]
    angle = np.degrees(np.arctan2(-d_row, d_col))  # north = up = decreasing row
    assert int(np.round(angle / 45.0)) % 8 == item["direction"], (angle, item["direction"])
    assert abs(np.hypot(d_row, d_col) - SPEEDS_PX_AT_32[item["speed"]]) < 0.1


def test_moving_mnist_bounces_and_stays_on_canvas():
  """Over a long clip the digit hits the walls: the centroid reverses along some axis, and the
  digit's total intensity stays constant (nothing leaves the canvas)."""
  src = synthetic.MovingMNIST(num_clips=6, num_frames=24, image_size=16, seed=4, split="test")
  reversals = 0
  for i in range(6):
    video = src[i]["video"]
    mass = video[..., 0].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(mass, mass[0], rtol=0.02)
    vel = np.diff(_centroids(video), axis=0)
    reversals += int(np.any(vel[1:] * vel[:-1] < -1e-3))
  assert reversals == 6  # 24 frames at >= 0.5 px/frame in an 8 px range always bounce


def test_moving_mnist_extra_digits_are_overlaid_distractors():
  """num_digits=2 keeps digit 0 (same draws, same labels) and max-overlays a second one, so the
  clip is pixel-wise >= the single-digit clip and strictly brighter somewhere."""
  one = synthetic.MovingMNIST(num_clips=3, num_frames=3, image_size=16, seed=9, split="train")
  two = synthetic.MovingMNIST(num_clips=3, num_frames=3, image_size=16, seed=9, split="train",
                              num_digits=2)
  for i in range(3):
    a, b = one[i], two[i]
    assert all(a[k] == b[k] for k in synthetic.MovingMNIST.LABELS)
    assert np.all(b["video"] >= a["video"]) and np.any(b["video"] > a["video"])


# ------------------------------------------------------------------------------------------------
# Gratings content.


def _spectrum(frame, pad=128):
  """Windowed, zero-padded FFT of a zero-mean frame; frequencies in cycles per image width."""
  n = frame.shape[0]
  win = np.hanning(n)[:, None] * np.hanning(n)[None, :]
  spec = np.fft.fft2((frame - frame.mean()) * win, s=(pad, pad))
  k = np.fft.fftfreq(pad) * n
  return spec, k[:, None], k[None, :]  # k_row, k_col


def test_gratings_orientation_frequency_and_drift_match_labels():
  size, n = 32, 48
  src = synthetic.Gratings(num_clips=n, num_frames=2, image_size=size, seed=0, split="train")
  for i in range(n):
    item = src[i]
    frames = item["video"].astype(np.float64).sum(axis=-1)  # colour-blind luminance
    spec0, k_row, k_col = _spectrum(frames[0])
    power = np.abs(spec0) ** 2
    # Up-positive frequency coordinates: y = -row.
    kx, ky = np.broadcast_to(k_col, power.shape), np.broadcast_to(-k_row, power.shape)
    # Doubled-angle power average: the orientation of the stripes' normal, modulo 180 deg.
    measured = np.degrees(np.angle((power * np.exp(2j * np.arctan2(ky, kx))).sum())) / 2 % 180
    label_deg = 30.0 * item["orientation"]
    err = abs((measured - label_deg % 180 + 90) % 180 - 90)
    assert err < 5.0, (measured, label_deg)
    # Peak frequency magnitude ~ spatial_freq (cycles per image).
    theta = np.radians(label_deg)
    forward = (kx * np.cos(theta) + ky * np.sin(theta)) > 0  # half-plane the wave travels into
    peak = np.unravel_index(np.argmax(np.where(forward, power, 0)), power.shape)
    assert abs(np.hypot(kx[peak], ky[peak]) - SPATIAL_FREQS[item["spatial_freq"]]) < 0.5
    # Drift: on the forward peak the phase moves by -2 pi tf per frame (pattern moves along +u),
    # which also resolves orientation vs orientation + 180.
    spec1, _, _ = _spectrum(frames[1])
    dphi = np.angle(spec1[peak] / spec0[peak])
    tf = TEMPORAL_FREQS[item["temporal_freq"]]
    assert abs(dphi + 2 * np.pi * tf) < 0.15, (dphi, -2 * np.pi * tf)
    assert not np.array_equal(item["video"][0], item["video"][1])


def test_gratings_contrast_and_colour_match_labels():
  src = synthetic.Gratings(num_clips=40, num_frames=1, image_size=32, seed=1, split="test")
  for i in range(40):
    item = src[i]
    v = item["video"][0].astype(np.float64) / 255.0  # (H, W, 3)
    gains = np.asarray(COLOURS[item["colour"]])
    # Channel means are gain * 0.5 (a full-field sinusoid averages to its midpoint).
    np.testing.assert_allclose(v.mean(axis=(0, 1)) / v.mean(axis=(0, 1)).max(), gains, atol=0.05)
    lit = v[..., 0] if gains[0] > 0 else v[..., np.argmax(gains)]
    michelson = (lit.max() - lit.min()) / (lit.max() + lit.min())
    assert abs(michelson - CONTRASTS[item["contrast"]]) < 0.05, (michelson, item["contrast"])


# ------------------------------------------------------------------------------------------------
# Pipeline.


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_iterator_shapes_and_determinism():
  cfg = data_cfg("gratings", num_clips=20, num_frames=3, image_size=16)
  mk = lambda seed: pipeline.make_train_iterator(cfg, seed=seed, global_batch_size=8,
                                                 process_index=0, process_count=1)
  first = _take(mk(0), 4)  # 32 clips: crosses the 20-clip epoch boundary
  batch = first[0]
  assert batch["video"].shape == (8, 3, 16, 16, 3) and batch["video"].dtype == np.uint8
  for name, k in synthetic.Gratings.LABELS.items():
    assert batch[name].shape == (8,) and batch[name].dtype == np.int32
    assert np.all((batch[name] >= 0) & (batch[name] < k))
  _assert_batches_equal(first, _take(mk(0), 4))
  other = _take(mk(1), 4)
  assert not any(np.array_equal(a["video"], b["video"]) for a, b in zip(first, other))


def _clip_ids(source):
  """Maps a clip's bytes to its index, to identify clips in batches by content."""
  ids = {source[i]["video"].tobytes(): i for i in range(len(source))}
  assert len(ids) == len(source)
  return ids


def test_process_shards_are_disjoint_cover_each_epoch_and_reshuffle():
  cfg = data_cfg("moving_mnist", num_clips=12, num_frames=2, image_size=16)
  ids = _clip_ids(synthetic.make_source(cfg, "train", 7))
  per_process = []
  for p in range(2):
    it = pipeline.make_train_iterator(cfg, seed=7, global_batch_size=4, process_index=p,
                                      process_count=2)
    batches = _take(it, 6)  # 6 steps x 4 global clips = 2 epochs
    assert all(b["video"].shape[0] == 2 for b in batches)
    per_process.append([[ids[v.tobytes()] for v in b["video"]] for b in batches])
  for epoch in range(2):
    steps = range(3 * epoch, 3 * epoch + 3)
    seen = [sum((per_process[p][s] for s in steps), []) for p in range(2)]
    assert not set(seen[0]) & set(seen[1])                   # disjoint
    assert sorted(seen[0] + seen[1]) == list(range(12))      # covering, each clip once
  order = lambda e: sum((per_process[p][s] for s in range(3 * e, 3 * e + 3) for p in range(2)), [])
  assert order(0) != order(1)  # every epoch is a new permutation
  # The single-process stream of the same seed is the same global order: process p holds rows
  # [2p, 2p + 2) of every global batch of 4.
  single = pipeline.make_train_iterator(cfg, seed=7, global_batch_size=4, process_index=0,
                                        process_count=1)
  for s, b in enumerate(_take(single, 3)):
    stream = [ids[v.tobytes()] for v in b["video"]]
    assert stream[:2] == per_process[0][s] and stream[2:] == per_process[1][s]


def test_iterator_state_resumes_at_the_next_batch():
  cfg = data_cfg("gratings", num_clips=10, num_frames=2, image_size=16)
  mk = lambda: pipeline.make_train_iterator(cfg, seed=3, global_batch_size=4, process_index=1,
                                            process_count=2)
  it = mk()
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # must survive a JSON round trip
  expected = _take(it, 4)
  resumed = mk()
  _take(resumed, 1)  # a fresh iterator at another position
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 4), expected)


def test_global_batch_on_8_device_mesh():
  devices = np.array(jax.devices()[:8]).reshape(4, 2)
  mesh = jax.sharding.Mesh(devices, ("data", "fsdp"))
  video_sharding = NamedSharding(mesh, P(("data", "fsdp"), None, None, None, None))
  cfg = data_cfg("moving_mnist", num_clips=16, num_frames=2, image_size=16)
  local = next(pipeline.make_train_iterator(cfg, seed=0, global_batch_size=8, process_index=0,
                                            process_count=1))
  out = pipeline.global_batch(local, video_sharding)
  assert set(out) == set(local)
  assert out["video"].shape == (8, 2, 16, 16, 3) and out["video"].dtype == np.uint8
  assert out["video"].sharding == video_sharding
  for name in synthetic.MovingMNIST.LABELS:
    assert out[name].shape == (8,) and out[name].dtype == np.int32
    assert out[name].sharding.spec == P(("data", "fsdp")) and out[name].sharding.mesh == mesh
  for name, arr in out.items():
    np.testing.assert_array_equal(np.asarray(arr), local[name])
    # Each device holds one clip, and video and labels of a clip live on the same device.
    assert len(arr.addressable_shards) == 8
    for shard in arr.addressable_shards:
      assert shard.data.shape[0] == 1
  starts = lambda a: {s.device: s.index[0].start for s in a.addressable_shards}
  assert starts(out["video"]) == starts(out["digit"])


def test_load_split_arrays_returns_a_stratified_subset_in_record_order():
  cfg = data_cfg("gratings", num_clips=9, num_frames=2, image_size=16)
  videos, labels = pipeline.load_split_arrays(cfg, "test", 5, seed=4)
  assert videos.shape == (5, 2, 16, 16, 3) and videos.dtype == np.uint8
  assert set(labels) == set(synthetic.Gratings.LABELS)
  src = synthetic.Gratings(num_clips=9, num_frames=2, image_size=16, seed=4, split="test")
  # The clips are those the stratified subset of the first label picks, in record order.
  first = np.array([src.labels(i)["orientation"] for i in range(9)])
  chosen = subsets.stratified_subset(first, 5, seed=4)
  for i, index in enumerate(chosen):
    np.testing.assert_array_equal(videos[i], src[int(index)]["video"])
    for k, v in labels.items():
      assert v.dtype == np.int32 and v[i] == src[int(index)][k]
  # The whole split is every clip in order.
  videos, labels = pipeline.load_split_arrays(cfg, "test", 9, seed=4)
  np.testing.assert_array_equal(videos[8], src[8]["video"])
  with pytest.raises(ValueError, match="num_clips"):
    pipeline.load_split_arrays(cfg, "test", 10, seed=4)


def test_file_source_epoch_order_is_a_seeded_permutation_per_epoch():
  """File sources draw record order from an explicit permutation per epoch: each epoch visits
  every record once, epochs differ, the order depends only on (seed, position) (also after
  pickling into a worker process), and it matches numpy's seeded permutation."""
  order = pipeline._EpochOrder(27, seed=5)  # pylint: disable=protected-access
  stream = [order(p, None) for p in range(27 * 3)]
  epochs = [stream[27 * e:27 * (e + 1)] for e in range(3)]
  assert all(sorted(e) == list(range(27)) for e in epochs)
  assert epochs[0] != epochs[1] != epochs[2]
  for e in range(3):
    np.testing.assert_array_equal(epochs[e], np.random.default_rng((5, e)).permutation(27))
  copy = pickle.loads(pickle.dumps(order))
  assert [copy(p, None) for p in (80, 3, 54, 26)] == [stream[p] for p in (80, 3, 54, 26)]
  assert [pipeline._EpochOrder(27, seed=6)(p, None) for p in range(27)] != epochs[0]  # pylint: disable=protected-access


def test_rendered_clips_are_kept_per_process_and_read_only():
  """A synthetic source serves exactly what rendering returns, keyed by the source's parameters
  and the index, and never lets a consumer alter a cached clip."""
  render = synthetic.MovingMNIST.__getitem__.__wrapped__  # the undecorated renderer
  a, b = (synthetic.MovingMNIST(8, 4, 16, seed, "train") for seed in (0, 1))
  first = a[3]
  again = a[3]
  np.testing.assert_array_equal(first["video"], render(a, 3)["video"])
  assert again["video"] is first["video"] and again is not first  # served, not re-rendered
  assert int(again["digit"]) == int(render(a, 3)["digit"])
  with pytest.raises(ValueError, match="read-only"):
    again["video"][0, 0, 0, 0] = 7
  # Another seed's clip 3 is its own entry (the key is the source's repr).
  np.testing.assert_array_equal(b[3]["video"], render(b, 3)["video"])
  assert not np.array_equal(b[3]["video"], first["video"])


def test_clip_cache_evicts_the_least_recently_used_beyond_its_byte_budget():
  """Its own cache, not the process's: other tests' prefetch threads may still be filling that."""
  clip = lambda i: {"video": np.full((2, 4, 4, 1), i, np.uint8)}
  renders = []
  def render(i):
    renders.append(i)
    return clip(i)
  cache = synthetic.ClipCache(budget_bytes=2 * clip(0)["video"].nbytes)
  for i in (0, 1, 0, 2):  # 1 is now the least recently used of {0, 1}; 2 evicts it
    cache.get_or_render(i, lambda i=i: render(i))
  assert renders == [0, 1, 2]
  assert cache.keys() == [0, 2] and cache.nbytes == 2 * clip(0)["video"].nbytes
  np.testing.assert_array_equal(cache.get_or_render(1, lambda: render(1))["video"], clip(1)["video"])
  assert renders == [0, 1, 2, 1] and cache.keys() == [2, 1]  # re-rendered; 0 went
  big = {"video": np.zeros((5, 4, 4, 1), np.uint8)}  # over the whole budget
  assert cache.get_or_render("big", lambda: big)["video"] is big["video"]  # served, never stored
  assert "big" not in cache.keys() and cache.nbytes == 2 * clip(0)["video"].nbytes
