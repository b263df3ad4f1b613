"""Tests for the evaluation pipeline: features, depth-wise table, plots, periodic hook, convergence
experiment and the evaluate CLI.

References are independent of the code under test: the model's own `block_outputs` run on the
whole clip set at once (no batching, no padding), probes on hand-built features with a known answer
(pure noise = chance, label-determined = perfect), hand-computed tail means, and PNG decoding.
Every model here is a micro ViT (width 16, 2 blocks, 8 tokens per clip) so that everything
compiles in seconds on CPU.
"""
import copy
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from matplotlib import image as mpimg

from layerlock_jax import config_defaults
from layerlock_jax import config_loading
from layerlock_jax import config_variants
from layerlock_jax import evaluate
from layerlock_jax import plan
from layerlock_jax import schedule
from layerlock_jax import state as state_lib
from layerlock_jax import train
from layerlock_jax.evaluation import analysis
from experiments import convergence
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import features as features_lib
from layerlock_jax.evaluation import periodic
from layerlock_jax.evaluation import plots
from layerlock_jax.models import video_mae


def micro_config(**overrides) -> ml_collections.ConfigDict:
  c = config_defaults.base_config()
  c.total_steps, c.batch_size, c.log_every, c.checkpoint_every = 4, 8, 1, 0
  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 16, 2, 32, 2
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d"
  m.remat_policy = "none"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 16, 1, 2, 32
  c.masking.ratio = 0.5
  c.optimizer.warmup_steps = 1
  c.optimizer.lr = 1e-3
  c.mesh.preset = "data_parallel"
  c.data.source = "moving_mnist"
  c.data.num_frames, c.data.image_size, c.data.num_clips = 4, 16, 64
  c.data.read_threads = 1
  return config_loading.override(c, overrides)


@pytest.fixture(scope="module")
def config():
  return micro_config()


@pytest.fixture(scope="module")
def params(config):
  return evaluate.random_init_params(config)


# Shapes shared by all tests (48 train / 40 test clips, one 10-class task, feature batches of 16,
# 50 probe steps): probes and the encoder forward compile once per shape, so sharing them keeps
# the file fast.
NUM_TRAIN, NUM_TEST, TASKS = 48, 40, ("digit",)
EVAL_KWARGS = dict(probe_steps=50, attentive_kwargs={"steps": 6, "batch_size": 8, "width": 16,
                                                     "num_heads": 2},
                   token_clips=16, batch_size=16)


@pytest.fixture(scope="module")
def data(config):
  return depthwise.load_eval_data(config, num_train=NUM_TRAIN, num_test=NUM_TEST, tasks=TASKS)


@pytest.fixture(scope="module")
def result(config, params, data):
  return depthwise.evaluate_params(config, params, data=data, seed=0, **EVAL_KWARGS)


# ------------------------------------------------------------------------------------------------
# Features.
# ------------------------------------------------------------------------------------------------


def test_load_eval_data_labels_and_task_filter(config):
  full = depthwise.load_eval_data(config, num_train=4, num_test=3)
  assert full.num_classes == {"digit": 10, "direction": 8, "speed": 3}
  assert full.train_videos.shape == (4, 4, 16, 16, 3) and full.test_videos.shape[0] == 3
  other = depthwise.load_eval_data(config, num_train=4, num_test=3, task_source="gratings")
  assert other.source == "gratings" and other.train_videos.shape == (4, 4, 16, 16, 3)
  assert set(other.num_classes) == {"orientation", "spatial_freq", "temporal_freq", "contrast",
                                    "colour"}
  with pytest.raises(ValueError, match="unknown tasks"):
    depthwise.load_eval_data(config, num_train=4, num_test=3, tasks=("orientation",))


def test_features_match_unbatched_block_outputs(config, params, data):
  model = video_mae.VideoMAE(config)
  videos = data.test_videos[:20]
  reference = np.asarray(jax.jit(model.block_outputs)(
      params["embed"], [params["encoder"]], jnp.asarray(videos)))  # [L+1, 20, N, D]
  # Batch size 16 over 20 clips: one full batch and one padded with 12 zero clips.
  feats = features_lib.FeatureExtractor(config, batch_size=16)(
      params, videos, token_blocks=(0, 1, 2), token_clips=5)
  assert feats.pooled.shape == (3, 20, 16) and feats.depth == 2 and feats.num_clips == 20
  np.testing.assert_allclose(feats.pooled, reference.mean(axis=2), rtol=1e-5, atol=1e-6)
  t, h, w = model.grid
  assert sorted(feats.tokens) == [0, 1, 2]
  for b in (0, 2):
    assert feats.tokens[b].shape == (5, t, h * w, 16)
    np.testing.assert_allclose(feats.tokens[b].reshape(5, -1, 16), reference[b, :5],
                               rtol=1e-5, atol=1e-6)
  # Per-block clip counts in one pass: block 2 for all 20 clips (across both batches), block 0
  # for the first 5, block 1 for none.
  mixed = features_lib.FeatureExtractor(config, batch_size=16)(
      params, videos, token_blocks=(0, 1, 2), token_clips={0: 5, 1: 0, 2: None})
  assert [mixed.tokens[b].shape[0] for b in (0, 1, 2)] == [5, 0, 20]
  np.testing.assert_allclose(mixed.tokens[2].reshape(20, -1, 16), reference[2], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(mixed.tokens[0], feats.tokens[0])


def test_features_of_a_split_train_state_equal_those_of_the_full_tree(config, params, data):
  # A TrainState with block 1 frozen holds the encoder in two stacks; the extractor must chain
  # them in depth order (frozen first), exactly like the merged tree.
  spec = state_lib.StageSpec(frozen_layers=1)
  ts = state_lib.TrainState.create(params, spec, seed=0, opt_state=())
  extractor = features_lib.FeatureExtractor(config, batch_size=16)
  a = extractor(params, data.test_videos[:16])
  b = extractor(ts, data.test_videos[:16])
  np.testing.assert_array_equal(a.pooled, b.pooled)


# ------------------------------------------------------------------------------------------------
# Depth-wise table.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_depthwise_pipeline_on_random_model_has_one_row_per_block(result, config, params, data):
  depth = config.model.depth
  assert result["blocks"] == list(range(depth + 1))
  assert [r["block"] for r in result["rows"]] == list(range(depth + 1))
  assert [r["name"] for r in result["rows"]] == ["embed", "block_1", "block_2"]
  assert set(result["tasks"]) == set(TASKS)
  for name, task in result["tasks"].items():
    assert task["num_classes"] == data.num_classes[name]
    for key in ("linear", "linear_train", "knn_top1", "knn_top5", "knn_mAP"):
      assert len(task[key]) == depth + 1
      assert all(0.0 <= v <= 1.0 for v in task[key])
    assert list(task["attentive"]) == [str(depth)]  # default: the last block
    counts = np.bincount(data.test_labels[name])
    assert task["chance"] == pytest.approx(counts.max() / counts.sum())
  for key in ("linear_cka", "rbf_cka"):
    mat = np.array(result[key])
    assert mat.shape == (depth + 1, depth + 1)
    np.testing.assert_allclose(mat, mat.T)
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-9)
    assert np.all((mat >= -1e-9) & (mat <= 1 + 1e-9))
  assert len(result["collapse"]) == depth + 1
  # Token cosine similarity of every depth, from the block outputs of the first token_clips test
  # clips: each token LayerNormed over features, L2-normalised, mean over pairs i != j per clip.
  model = video_mae.VideoMAE(config)
  clips = EVAL_KWARGS["token_clips"]
  outputs = np.asarray(jax.jit(model.block_outputs)(
      params["embed"], [params["encoder"]], jnp.asarray(data.test_videos[:clips])), np.float64)
  for j, (row, stats) in enumerate(zip(result["rows"], result["collapse"], strict=True)):
    assert row["effective_rank"] == stats["effective_rank"]
    z = outputs[j] - outputs[j].mean(-1, keepdims=True)
    z /= np.linalg.norm(z, axis=-1, keepdims=True)  # LayerNorm then L2 norm: the centred direction
    cos = np.einsum("ctd,csd->cts", z, z)
    n = cos.shape[1]
    want = np.mean((cos.sum((1, 2)) - np.trace(cos, axis1=1, axis2=2)) / (n * (n - 1)))
    assert stats["token_cosine_similarity"] == pytest.approx(want, abs=1e-4), j


def _features(blocks: list[np.ndarray]) -> features_lib.Features:
  return features_lib.Features(pooled=np.stack(blocks).astype(np.float32), tokens={},
                               grid=(1, 1, 1))


def test_depthwise_table_reads_the_right_depths_and_flags_collapse():
  # Depth 0: noise; depth 1: a one-hot code of the label plus noise (linearly decodable);
  # depth 2: one point plus 1e-6 noise (complete collapse). The table must say exactly that.
  rng = np.random.default_rng(0)
  classes, d = 4, 8
  ytr, yte = rng.integers(0, classes, 200), rng.integers(0, classes, 200)

  def blocks(y):
    noise = rng.normal(size=(len(y), d))
    signal = np.eye(d)[y] * 5.0 + 0.3 * rng.normal(size=(len(y), d))
    collapsed = np.ones((len(y), d)) + 1e-6 * rng.normal(size=(len(y), d))
    return [noise, signal, collapsed]

  out = depthwise.depthwise_analysis(_features(blocks(ytr)), {"y": ytr}, _features(blocks(yte)),
                                     {"y": yte}, {"y": classes}, seed=0, probe_steps=100)
  task = out["tasks"]["y"]
  # Noise: Binomial(200, 1/4) / 200 has std 0.031; 0.16 is > 5 sigma above chance.
  assert task["linear"][0] < 0.25 + 0.16 and task["knn_top1"][0] < 0.25 + 0.16
  assert task["linear"][1] == 1.0 and task["knn_top1"][1] == 1.0
  assert [s["collapsed"] for s in out["collapse"]] == [False, False, True]
  assert [r["collapsed"] for r in out["rows"]] == [False, False, True]
  # CKA of the label code with itself is 1, with independent noise it is small.
  assert out["linear_cka"][1][1] == pytest.approx(1.0)
  assert out["linear_cka"][0][1] < 0.2


def test_probe_never_changes_encoder_parameters(config, params, data):
  before = jax.tree.map(lambda a: np.array(a, copy=True), params)
  depthwise.evaluate_params(config, params, data=data, seed=0, **EVAL_KWARGS)
  # Arrays were neither donated (they are still readable) nor changed (bit-for-bit).
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))


def _without_timing(r):
  r = copy.deepcopy(r)
  r.pop("timing", None)
  return r


@pytest.mark.slow
def test_evaluation_is_identical_across_two_runs_with_one_seed(config, params, data, result):
  again = depthwise.evaluate_params(config, params, data=data, seed=0, **EVAL_KWARGS)
  a, b = json.dumps(_without_timing(result), sort_keys=True), json.dumps(
      _without_timing(again), sort_keys=True)
  assert a == b


# ------------------------------------------------------------------------------------------------
# Periodic (in-training) evaluation on a StagePrograms' sharded, split state.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_periodic_evaluation_reads_a_sharded_train_state(config):
  cfg = micro_config(**{"layerlock.enabled": True, "layerlock.target": "pixel",
                        "layerlock.explicit": ((2, 1),), "layerlock.max_frozen": 1})
  trainer = train.StagePrograms(cfg)
  assert trainer.mesh.devices.size == 8  # conftest's forced CPU devices
  spec = trainer.spec_at(2)
  assert spec.frozen_layers == 1
  state = trainer.init_state(spec)
  before = jax.tree.map(lambda a: np.array(a, copy=True), (state.params, state.frozen))
  kwargs = dict(num_train=NUM_TRAIN, num_test=NUM_TEST, probe_steps=50, batch_size=16,
                tasks=TASKS)
  first = periodic.evaluate_during_training(trainer, state, 2, **kwargs)
  second = periodic.evaluate_during_training(trainer, state, 4)
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.tree.map(np.asarray, (state.params, state.frozen)))
  first.pop("eval/seconds"), second.pop("eval/seconds")
  assert first == second
  blocks = periodic.default_blocks(2)
  assert blocks == (1, 2)
  expected = {f"eval/{t}/{m}_block{b}" for t in TASKS
              for m in ("linear", "knn_top1") for b in blocks}
  expected |= {f"eval/collapse/{m}_block{b}" for m in ("effective_rank", "normalized_std",
                                                       "collapsed") for b in blocks}
  assert set(first) == expected
  assert all(isinstance(v, float) and np.isfinite(v) for v in first.values())
  # Same numbers as the offline pipeline's features on the merged tree.
  full = jax.device_get(state.full_params())
  evaluator = periodic._EVALUATORS[trainer]  # pylint: disable=protected-access
  test = features_lib.FeatureExtractor(cfg, batch_size=16)(full, evaluator.data.test_videos)
  stats = analysis.collapse_statistics(test.pooled[2])
  assert first["eval/collapse/effective_rank_block2"] == pytest.approx(stats["effective_rank"],
                                                                       rel=1e-4)


# ------------------------------------------------------------------------------------------------
# Plots.
# ------------------------------------------------------------------------------------------------


def _assert_png(path):
  assert os.path.getsize(path) > 5_000
  img = mpimg.imread(path)
  assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
  assert img[..., :3].std() > 0.02  # not a blank canvas


@pytest.mark.slow
def test_plots_are_written_and_non_empty(tmp_path, result, config):
  rows = [{"step": s, "loss": 1.0 / s, "frozen_layers": int(s > 10), "target": "pixels"}
          for s in range(1, 21)]
  rows.insert(5, {"step": 5, "eval/digit/linear_block1": 0.5})  # an eval row has no loss
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
  with_ref = dict(result, random_init=result)
  paths = evaluate.write_evaluation(with_ref, str(tmp_path / "eval"), "step_7",
                                    metrics_path=str(metrics))
  assert set(paths) == {"json", "probe", "cka", "collapse", "loss_curve"}
  for kind in ("probe", "cka", "collapse", "loss_curve"):
    _assert_png(paths[kind])
  written = json.loads((tmp_path / "eval" / "step_7.json").read_text())
  assert len(written["rows"]) == config.model.depth + 1


def test_stage_boundaries_from_metrics_equal_the_freeze_table_when_switches_are_logged():
  rows = [{"step": s, "loss": 1.0, "frozen_layers": k, "target": t}
          for s, k, t in ((10, 0, "pixels"), (20, 0, "pixels"), (30, 1, "block_1"),
                          (40, 2, "block_2"), (50, 2, "block_2"))]
  rows.append({"step": 50, "eval/x": 1.0})
  assert plots.stages_from_metrics(rows) == [(0, 0, "pixels"), (30, 1, "block_1"),
                                             (40, 2, "block_2")]
  # The exact freeze table of a config whose switches fall on logged steps: rows logged every 5
  # steps from it give back the table's stages.
  cfg = micro_config(**{"layerlock.enabled": True, "layerlock.pixel_steps": 15,
                        "layerlock.interval": 10, "layerlock.max_frozen": 2, "total_steps": 50,
                        "model.depth": 3})
  table = plan.freeze_table(cfg, 3)
  stages = [(s.start_step, s.frozen_layers, s.target) for s in table]
  assert [k for _, k, _ in stages] == [0, 1, 2]
  logged = [{"step": step, "frozen_layers": table[i].frozen_layers, "target": table[i].target}
            for step in range(5, 51, 5)
            for i in [max(i for i, s in enumerate(table) if s.start_step <= step)]]
  assert plots.stages_from_metrics(logged) == stages


# ------------------------------------------------------------------------------------------------
# Convergence-order experiment.
# ------------------------------------------------------------------------------------------------


def test_convergence_grid_bookkeeping():
  cells, skipped = convergence.grid_cells((0, 1, 2, 6), (0, 50, 100), total_steps=100,
                                          encoder_depth=6)
  assert cells == [(1, 50), (2, 50)]
  assert {(s["layers"], s["step"]) for s in skipped} == {
      (0, 0), (0, 50), (0, 100), (1, 0), (1, 100), (2, 0), (2, 100), (6, 0), (6, 50), (6, 100)}
  assert convergence.default_steps(600) == (60, 150, 300)
  assert convergence.default_steps(4) == (1, 2)

  base = config_variants.baseline_config(micro_config(**{"naive_latent.enabled": True}))
  assert not base.layerlock.enabled and not base.naive_latent.enabled
  cfg = config_variants.frozen_config(micro_config(**{"model.depth": 4}), 3, 2)
  table = schedule.freeze_table(cfg, 4)
  assert [(s.start_step, s.frozen_layers, s.target) for s in table] == [
      (0, 0, "pixels"), (2, 3, "pixels")]
  # Tail mean: the rows logged after 90% of 100 steps.
  rows = [{"step": s, "loss": float(s)} for s in range(10, 101, 10)] + [{"step": 95}]
  assert convergence.final_loss(rows, 100, 0.1) == 100.0
  assert convergence.final_loss(rows, 100, 0.25) == pytest.approx((80 + 90 + 100) / 3)


def test_convergence_experiment_with_stand_in_runs(tmp_path):
  # A stand-in for train.run whose final loss is 1 if blocks <= L had "converged" by T (T >= 150 L)
  # and 1.5 otherwise: the experiment must recover the staircase 200, 300, none.
  calls = []

  def fake_run(cfg, workdir):
    explicit = cfg.layerlock.explicit if cfg.layerlock.enabled else ()
    calls.append(tuple(explicit))
    loss = 1.0
    if explicit:
      (t, l), = explicit
      assert cfg.layerlock.target == "pixel" and cfg.layerlock.max_frozen >= l
      loss = 1.0 if t >= 150 * l else 1.5
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for s in range(50, cfg.total_steps + 1, 50):
        f.write(json.dumps({"step": s, "loss": loss + (1.0 if s < 300 else 0.0)}) + "\n")

  cfg = micro_config(**{"model.depth": 4, "total_steps": 400})
  out = convergence.run_convergence_experiment(cfg, str(tmp_path), layers=(1, 2, 3),
                                               steps=(100, 200, 300), run_fn=fake_run)
  assert calls[0] == () and len(calls) == 10
  assert out["baseline"]["final_loss"] == 1.0
  assert out["earliest_free_step"] == {"1": 200, "2": 300, "3": None}
  cell = next(c for c in out["cells"] if (c["layers"], c["step"]) == (3, 100))
  assert cell["relative_increase"] == pytest.approx(0.5) and not cell["free"]
  assert json.loads((tmp_path / "convergence.json").read_text())["layers"] == [1, 2, 3]
  _assert_png(tmp_path / "convergence.png")


@pytest.fixture(scope="module")
def real_experiment(tmp_path_factory):
  """The real thing on the micro model: baseline + one cell (L=1, T=2), 4 steps each. Its
  baseline workdir (with the final checkpoint) doubles as the run that `evaluate` loads."""
  workdir = tmp_path_factory.mktemp("convergence")
  cfg = micro_config()
  return cfg, workdir, convergence.run_convergence_experiment(cfg, str(workdir), layers=(1,),
                                                              steps=(2,))


@pytest.mark.slow
def test_convergence_cell_matches_baseline_until_the_freeze(real_experiment):
  # The module docstring's claim that a cell is the baseline restarted at T rests on determinism:
  # logged losses must agree exactly before T and the cell must actually freeze block 1 from T on.
  _, tmp_path, out = real_experiment
  base_rows = plots.read_metrics(str(tmp_path / "baseline" / "metrics.jsonl"))
  cell_rows = plots.read_metrics(str(tmp_path / "L1_T2" / "metrics.jsonl"))
  assert [r["step"] for r in cell_rows] == [1, 2, 3, 4]
  assert [r["frozen_layers"] for r in cell_rows] == [0, 0, 1, 1]  # step 3 is the first frozen one
  assert [r["frozen_layers"] for r in base_rows] == [0, 0, 0, 0]
  assert [r["loss"] for r in cell_rows[:2]] == [r["loss"] for r in base_rows[:2]]
  assert out["cells"][0]["final_loss"] == pytest.approx(cell_rows[-1]["loss"])
  assert np.isfinite(out["cells"][0]["relative_increase"])


# ------------------------------------------------------------------------------------------------
# The evaluate CLI's work, on a real checkpoint.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_restores_a_checkpoint_and_writes_results(real_experiment, params):
  cfg, tmp_path, _ = real_experiment
  workdir = str(tmp_path / "baseline")
  out = evaluate.run_evaluation(cfg, workdir, num_clips=NUM_TRAIN, attentive_steps=0,
                                random_baseline=True, tasks=TASKS)
  assert out["step"] == cfg.total_steps
  written = json.loads((tmp_path / "baseline" / "eval" / "step_4.json").read_text())
  assert written["step"] == 4 and len(written["rows"]) == 3 and "random_init" in written
  for kind in ("probe", "cka", "collapse", "loss_curve"):
    _assert_png(out["paths"][kind])
  # The restored encoder is the trained one (4 steps moved it away from initialisation), and the
  # random-init reference is exactly the initialisation.
  state = evaluate.load_checkpoint_state(cfg, workdir)[1]
  full = jax.device_get(state.full_params())
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full["encoder"]),
                                                     jax.tree.leaves(params["encoder"])))
  test_videos = depthwise.load_eval_data(cfg, num_train=1, num_test=NUM_TRAIN,
                                         tasks=TASKS).test_videos
  for tree, res in ((full, written), (params, written["random_init"])):
    feats = features_lib.FeatureExtractor(cfg)(tree, test_videos)
    stats = analysis.collapse_statistics(feats.pooled[2])
    assert res["collapse"][2]["effective_rank"] == pytest.approx(stats["effective_rank"],
                                                                 rel=1e-5)


@pytest.mark.slow
def test_evaluate_command_line(real_experiment):
  # The CLI end to end in a fresh process: flag parsing, --step, --task_source, --tasks.
  cfg, tmp_path, _ = real_experiment
  workdir = tmp_path / "baseline"
  m, d = cfg.model, cfg.model.decoder
  overrides = [f"--config.model.{k}={v}" for k, v in (
      ("width", m.width), ("depth", m.depth), ("mlp_dim", m.mlp_dim), ("num_heads", m.num_heads),
      ("decoder.width", d.width), ("decoder.depth", d.depth), ("decoder.num_heads", d.num_heads),
      ("decoder.mlp_dim", d.mlp_dim))]
  overrides += [f"--config.data.{k}={getattr(cfg.data, k)}"
                for k in ("num_frames", "image_size", "num_clips")]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.evaluate", "--config=configs/tiny.py", *overrides,
       f"--workdir={workdir}", "--step=4", "--num_clips=16", "--task_source=gratings",
       "--tasks=colour,contrast", "--attentive_steps=0", "--norandom_baseline"],
      cwd=repo, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 4 on gratings" in proc.stdout
  written = json.loads((workdir / "eval" / "step_4_gratings.json").read_text())
  assert written["task_source"] == "gratings" and set(written["tasks"]) == {"colour", "contrast"}
  assert written["num_train"] == 16 and "random_init" not in written
  for kind in ("probe", "cka", "collapse"):
    _assert_png(workdir / "eval" / f"step_4_gratings_{kind}.png")
