"""Streaming frozen-encoder probes (evaluation/streaming.py) and stratified subsets (subsets.py)."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import av
import jax
import ml_collections
import numpy as np
import pytest

from layerlock_jax import config_defaults
from layerlock_jax import config_loading
from layerlock_jax import evaluate
from layerlock_jax import sharding as sharding_lib
from layerlock_jax.data import pipeline
from layerlock_jax.data import subsets
from layerlock_jax.data import video_files
from layerlock_jax.evaluation import streaming

ROOT = pathlib.Path(__file__).resolve().parent.parent


def micro_config(**overrides) -> ml_collections.ConfigDict:
  c = config_defaults.base_config()
  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 16, 2, 32, 2
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d"
  m.remat_policy = "none"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 16, 1, 2, 32
  c.mesh.preset = "data_parallel"
  c.data.source = "moving_mnist"
  c.data.num_frames, c.data.image_size, c.data.num_clips = 4, 16, 64
  return config_loading.override(c, overrides)


SMALL = dict(width=16, num_heads=2, read_threads=1, progress_every_s=1e9)


# ------------------------------------------------------------------------------------------------
# Stratified subsets.


def test_stratified_subset_balances_classes_and_is_seeded():
  labels = np.repeat(np.arange(20), 11)              # class-sorted, like a folder listing
  sub = subsets.stratified_subset(labels, 200, seed=3)
  assert len(sub) == 200 and np.all(np.diff(sub) > 0)
  counts = np.bincount(labels[sub], minlength=20)
  assert set(counts) <= {10, 11} and counts.sum() == 200
  assert np.array_equal(sub, subsets.stratified_subset(labels, 200, seed=3))
  assert not np.array_equal(sub, subsets.stratified_subset(labels, 200, seed=4))
  # A class with fewer clips than its share gives what it has; the others share the rest.
  uneven = np.concatenate([np.zeros(2, int), np.repeat(np.arange(1, 5), 30)])
  counts = np.bincount(uneven[subsets.stratified_subset(uneven, 50, seed=0)], minlength=5)
  assert counts.tolist() == [2, 12, 12, 12, 12]
  # The whole split is the split, in order; an unlabelled source gets a seeded uniform draw.
  assert np.array_equal(subsets.stratified_subset(labels, 220, seed=0), np.arange(220))
  plain = subsets.stratified_subset(None, 4, seed=1, total=10)
  assert len(set(plain.tolist())) == 4 and plain.max() < 10
  for bad in (0, 221):
    with pytest.raises(ValueError, match="needs 1 <= num <= 220"):
      subsets.stratified_subset(labels, bad, seed=0)


def _write_video(path: str, value: int, frames: int = 8, size: int = 16) -> None:
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
    for _ in range(frames):
      frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), value, np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope="module")
def class_sorted_folder(tmp_path_factory):
  """train/ and test/ of 20 classes x 11 videos (one encoded clip per class, copied)."""
  root = tmp_path_factory.mktemp("sorted20")
  seed_dir = root / "_one"
  seed_dir.mkdir()
  for c in range(20):
    one = seed_dir / f"{c}.mp4"
    _write_video(str(one), 10 + 12 * c)
    for split in ("train", "test"):
      d = root / split / f"class_{c:02d}"
      d.mkdir(parents=True)
      for j in range(11):
        shutil.copy(one, d / f"v{j:02d}.mp4")
  shutil.rmtree(seed_dir)
  return root


def test_class_sorted_folder_gives_every_class_to_probe_train_and_test(class_sorted_folder):
  cfg = micro_config()
  cfg.data.source, cfg.data.path = "video_folder", str(class_sorted_folder)
  listing = video_files.list_videos(str(class_sorted_folder), "train")
  # The folder is class-sorted: the first 200 clips in index order miss classes.
  assert len(set(listing.labels[:200])) < 20
  for split in ("train", "test"):
    videos, labels = pipeline.load_split_arrays(cfg.data, split, 200, seed=0)
    assert videos.shape[0] == 200 and len(set(labels["label"].tolist())) == 20
  params = evaluate.random_init_params(cfg)
  result = streaming.evaluate(cfg, params, streaming.StreamSettings(
      batch_size=40, epochs=1, num_train=200, num_test=200, **SMALL), log=lambda _: None)
  assert result["num_train"] == result["num_test"] == 200
  assert result["train_classes"] == result["test_classes"] == {"label": 20}
  assert result["tasks"]["label"]["num_classes"] == 20


# ------------------------------------------------------------------------------------------------
# Views.


def test_views_are_evenly_spaced_clips_and_diagonal_crops():
  tw, size = 8, 19
  t, y, x = np.meshgrid(np.arange(tw), np.arange(size), np.arange(size), indexing="ij")
  window = np.stack([t, y, x], axis=-1)              # each pixel holds its own (t, y, x)
  views = streaming.Views(temporal_clips=2, spatial_crops=3)
  assert views.window(4, 16) == (8, 19)              # 2 x 4 frames, ceil(16 * 8 / 7) pixels
  out = streaming.cut_views(window, 4, 16, views)
  assert out.shape == (6, 4, 16, 16, 3)
  corners = [tuple(v[0, 0, 0]) for v in out]
  # Starts in time: 0 and 8 - 4; crops: 0, round(1.5) = 2, 3 along the diagonal.
  assert corners == [(0, 0, 0), (0, 2, 2), (0, 3, 3), (4, 0, 0), (4, 2, 2), (4, 3, 3)]
  centre = streaming.cut_views(window, 4, 16, streaming.Views())
  assert centre.shape == (1, 4, 16, 16, 3) and tuple(centre[0, 0, 0, 0]) == (2, 1, 1)
  with pytest.raises(ValueError, match="must hold a clip"):
    streaming.Views(window_frames=3).check(4, 16)


# ------------------------------------------------------------------------------------------------
# The probes.


@pytest.fixture(scope="module")
def config():
  return micro_config()


@pytest.fixture(scope="module")
def params(config):
  return evaluate.random_init_params(config)


SETTINGS = streaming.StreamSettings(batch_size=8, epochs=2, num_train=32, num_test=24,
                                    views=streaming.Views(2, 2), **SMALL)


def _accuracies(result):
  return {(k, p, m): t[p][m] for k, t in result["tasks"].items()
          for p in ("linear", "attentive") for m in ("top1", "top5")}


def test_same_result_on_one_and_four_devices_and_from_the_feature_cache(config, params, tmp_path):
  devices = jax.devices()
  one = streaming.evaluate(config, params, SETTINGS, log=lambda _: None,
                           mesh=sharding_lib.make_mesh(config.mesh, devices[:1]))
  four = streaming.evaluate(config, params, SETTINGS, log=lambda _: None,
                            mesh=sharding_lib.make_mesh(config.mesh, devices[:4]))
  assert _accuracies(one) == _accuracies(four)
  assert one["train_loss"] == pytest.approx(four["train_loss"], rel=1e-4)
  for k, t in one["tasks"].items():
    for p in ("linear", "attentive"):
      assert 0.0 <= t[p]["top1"] <= t[p]["top5"] <= 1.0
  assert one["tasks"]["speed"]["linear"]["top5"] == 1.0   # 3 classes: the top 3 hold every label
  assert one["train_classes"]["digit"] == 10 and one["test_classes"]["digit"] == 10

  logs = []
  cached = dict(SETTINGS.__dict__, feature_cache=str(tmp_path / "cache"))
  first = streaming.evaluate(config, params, streaming.StreamSettings(**cached), log=logs.append,
                             mesh=sharding_lib.make_mesh(config.mesh, devices[:4]))
  again = streaming.evaluate(config, params, streaming.StreamSettings(**cached), log=logs.append,
                             mesh=sharding_lib.make_mesh(config.mesh, devices[:4]))
  assert [line.split(": ")[-1] for line in logs if "feature cache" in line] == ["writing",
                                                                                 "reading"]
  assert _accuracies(first) == _accuracies(again) == _accuracies(four)
  assert again["train_loss"] == pytest.approx(four["train_loss"], rel=1e-4)


def test_probes_learn_a_task_the_pixels_give_away(params):
  # Gratings' colour is the clip's mean colour: decodable from any embedding, even a random one.
  cfg = micro_config(**{"data.source": "gratings", "data.num_clips": 160})
  settings = streaming.StreamSettings(batch_size=16, epochs=4, num_train=160, num_test=80,
                                      tasks=("colour",), lr=1e-2, **SMALL)
  result = streaming.evaluate(cfg, params, settings, log=lambda _: None)
  colour = result["tasks"]["colour"]
  assert colour["num_classes"] == 5
  assert colour["linear"]["top1"] > 0.6 and colour["attentive"]["top1"] > 0.6


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=6), "multiple of the mesh's batch split"),
    (dict(block=3), r"block=3 must lie in \[1, 2\]"),
    (dict(views=streaming.Views(temporal_clips=0)), "temporal_clips >= 1"),
    (dict(tasks=("colour",)), "unknown tasks"),
])
def test_bad_settings_are_one_clear_error(config, params, change, message):
  settings = streaming.StreamSettings(**{**SETTINGS.__dict__, **change})
  with pytest.raises(ValueError, match=message):
    streaming.evaluate(config, params, settings, log=lambda _: None,
                       mesh=sharding_lib.make_mesh(config.mesh, jax.devices()[:4]))


# ------------------------------------------------------------------------------------------------
# The command: 2 processes x 2 devices give what 1 process x 4 devices gives.


def _imported_workdir(tmp: pathlib.Path, config, params) -> pathlib.Path:
  from layerlock_jax import weights  # pylint: disable=g-import-not-at-top
  from layerlock_jax.weights import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  m = config.model
  model = {k: m[k] for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size", "posemb",
                             "remat_policy")}
  data = {k: config.data[k] for k in ("source", "num_frames", "image_size", "num_clips")}
  encoder = {"embed": jax.device_get(params["embed"]), "encoder": jax.device_get(params["encoder"])}
  workdir = tmp / "imported"
  workdir_lib.save_imported(weights.Imported("test", "random init", model, data, encoder),
                            str(workdir))
  return workdir


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


STREAM_FLAGS = ["--stream", "--num_train=32", "--num_test=24", "--batch_size=8", "--epochs=2",
                "--temporal_clips=2", "--spatial_crops=2", "--probe_width=16", "--probe_heads=2",
                "--read_threads=1", "--tasks=digit,speed"]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  # 4x4 patches: an imported model's config keeps the default masking ratio, which needs tokens.
  config = micro_config(**{"model.patch_size": (2, 4, 4), "data.num_clips": 256})
  one_dir = _imported_workdir(tmp_path, config, evaluate.random_init_params(config))
  two_dir = tmp_path / "two"
  shutil.copytree(one_dir, two_dir)
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", ""))
  cmd = [sys.executable, "-m", "layerlock_jax.evaluate", *STREAM_FLAGS]
  run = subprocess.run([*cmd, f"--workdir={one_dir}"], cwd=ROOT, capture_output=True, text=True,
                       env={**env, "JAX_NUM_CPU_DEVICES": "4"}, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "4 device(s) in 1 process(es)" in run.stdout and "ETA" in run.stdout
  multi = {**env, "JAX_NUM_CPU_DEVICES": "2", "JAX_NUM_PROCESSES": "2",
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}"}
  procs = [subprocess.Popen([*cmd, f"--workdir={two_dir}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**multi, "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "4 device(s) in 2 process(es)" in outs[0][0]
  got = json.loads((two_dir / "eval" / "step_0_stream.json").read_text())
  want = json.loads((one_dir / "eval" / "step_0_stream.json").read_text())
  assert _accuracies(got) == _accuracies(want)
  assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
  # Process 1 computed the same numbers (it prints the table, process 0 writes the file).
  assert outs[1][0].split("step 0:")[1].split("wrote")[0] == outs[0][0].split("step 0:")[1].split(
      "wrote")[0]
