"""V-JEPA and V-JEPA + LayerLock: EMA teacher, multi-block masks, predictor inputs, frozen blocks,
resume with the teacher, and 8-device FSDP = 1 device.

References are independent of the code under test: a numpy EMA loop, rectangles re-drawn into a
numpy mask, gradients taken by JAX w.r.t. the teacher, bit comparisons against an uninterrupted
single-device run.
"""
import json
import math
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layerlock_jax import checkpoint
from layerlock_jax import config_loading
from layerlock_jax import config_validation
from layerlock_jax import flops
from layerlock_jax import masking
from layerlock_jax import plan
from layerlock_jax import train
from layerlock_jax import train_step as step_lib
from layerlock_jax import vjepa

import test_checkpoint as ckpt_tests
from conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 16
# configs/vjepa_tiny.py:layerlock shrunk to seconds: a 2x4x4 token grid, 3 blocks, stages
# k = 0 (teacher block 1), 1 (block 1) and 2 (block 2) starting at steps 0, 6 and 10.
SMALL = {
    "total_steps": STEPS, "batch_size": 8, "log_every": 1, "checkpoint_every": 4,
    "keep_checkpoints": 20, "model.width": 32, "model.depth": 3, "model.mlp_dim": 64,
    "model.num_heads": 2, "vjepa.predictor.width": 16, "vjepa.predictor.depth": 1,
    "vjepa.predictor.num_heads": 2, "vjepa.predictor.mlp_dim": 32, "data.num_frames": 4,
    "data.image_size": 32, "data.num_clips": 64, "optimizer.warmup_steps": 2,
    "vjepa.ema_start": 0.9, "masking.ratio": 0.5, "masking.context_ratio": 0.25,
    "layerlock.pixel_steps": 6, "layerlock.interval": 4, "layerlock.max_frozen": 2,
    "layerlock.mini_warmup_steps": 2,
    # The mechanics tested here do not depend on the clips; Moving MNIST renders fastest.
    "data.source": "moving_mnist",
}


def make_config(variant="layerlock", **extra):
  return config_loading.load_config(f"{ROOT / 'configs' / 'vjepa_tiny.py'}:{variant}",
                                    {**SMALL, **extra})


# --- EMA ---------------------------------------------------------------------------------------------
def test_ema_update_matches_numpy_loop():
  config = make_config(**{"total_steps": 10, "vjepa.ema_start": 0.9, "vjepa.ema_end": 1.0})
  rng = np.random.default_rng(0)
  shapes = {"embed": {"w": (5, 3)}, "encoder": {"w": (3, 4, 2), "b": (3, 2)}}
  draw = lambda: jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                              is_leaf=lambda x: isinstance(x, tuple))
  teacher0 = draw()
  students = [draw() for _ in range(10)]
  teacher = jax.tree.map(jnp.asarray, teacher0)
  want = jax.tree.map(np.array, teacher0)
  update = jax.jit(lambda t, p, m: vjepa.ema_update(t, p, {}, m, frozen_layers=0,
                                                    copy_frozen=False))
  for step, student in enumerate(students):
    m = vjepa.momentum(config, step)
    teacher = update(teacher, jax.tree.map(jnp.asarray, student), m)
    m_np = np.float32(0.9 + 0.1 * step / 10)
    for path in (("embed", "w"), ("encoder", "w"), ("encoder", "b")):
      t, s = want[path[0]][path[1]], student[path[0]][path[1]]
      want[path[0]][path[1]] = m_np * t + (np.float32(1) - m_np) * s
  np.testing.assert_allclose(float(vjepa.momentum(config, 10)), 1.0)
  for path in (("embed", "w"), ("encoder", "w"), ("encoder", "b")):
    np.testing.assert_allclose(np.asarray(teacher[path[0]][path[1]]), want[path[0]][path[1]],
                               rtol=1e-6, atol=1e-6)


def test_ema_with_frozen_blocks_averages_split_student_or_copies_frozen():
  rng = np.random.default_rng(1)
  f32 = lambda *s: rng.normal(size=s).astype(np.float32)
  teacher = {"embed": {"w": f32(2, 2)}, "encoder": {"w": f32(4, 3)}}
  params = {"encoder": {"w": f32(1, 3)}}  # block 4 trainable
  frozen = {"embed": {"w": f32(2, 2)}, "encoder": {"w": f32(3, 3)}}  # blocks 1..3 frozen
  m = np.float32(0.75)
  ema = vjepa.ema_update(teacher, params, frozen, m, frozen_layers=3, copy_frozen=False)
  student_enc = np.concatenate([frozen["encoder"]["w"], params["encoder"]["w"]])
  np.testing.assert_allclose(ema["encoder"]["w"], m * teacher["encoder"]["w"]
                             + (1 - m) * student_enc, rtol=1e-6)
  np.testing.assert_allclose(ema["embed"]["w"], m * teacher["embed"]["w"]
                             + (1 - m) * frozen["embed"]["w"], rtol=1e-6)
  copied = vjepa.ema_update(teacher, params, frozen, m, frozen_layers=3, copy_frozen=True)
  np.testing.assert_array_equal(copied["encoder"]["w"][:3], frozen["encoder"]["w"])
  np.testing.assert_array_equal(copied["embed"]["w"], frozen["embed"]["w"])
  np.testing.assert_array_equal(copied["encoder"]["w"][3:], ema["encoder"]["w"][3:])


# --- multi-block masks -------------------------------------------------------------------------------
BLOCKS, ASPECT = ((8, 0.15), (2, 0.7)), (0.75, 1.5)


def _numpy_coverage(rng, n, h, w, count, scale):
  """Mean fraction of an (h, w) grid covered by `count` random blocks, drawn by V-JEPA's rule
  (aspect uniform, size rounded from sqrt(area * ratio), position uniform where it fits)."""
  covered = []
  for _ in range(n):
    grid = np.zeros((h, w), bool)
    for _ in range(count):
      ratio = rng.uniform(*ASPECT)
      bh = min(max(int(np.round(math.sqrt(scale * h * w * ratio))), 1), h)
      bw = min(max(int(np.round(math.sqrt(scale * h * w / ratio))), 1), w)
      top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
      grid[top:top + bh, left:left + bw] = True
    covered.append(grid.mean())
  return float(np.mean(covered))


def test_multiblock_masks_shapes_blocks_and_ratio_statistics():
  t, h, w = 4, 14, 14
  batch = 256
  key = jax.random.key(3)
  blocks_fn = jax.jit(lambda k: masking.sample_blocks(k, batch, (h, w), BLOCKS, ASPECT))
  union, (bh, bw, top, left, active) = blocks_fn(key)
  union, bh, bw, top, left, active = map(np.asarray, (union, bh, bw, top, left, active))
  # The union is exactly the rectangles drawn into a grid (re-drawn here in numpy).
  for i in range(0, batch, 37):
    grid = np.zeros((h, w), bool)
    for j in np.flatnonzero(active[i]):
      grid[top[i, j]:top[i, j] + bh[i, j], left[i, j]:left[i, j] + bw[i, j]] = True
    np.testing.assert_array_equal(union[i], grid.reshape(-1))
  # Group per clip (i mod 2): 8 short-range or 2 long-range blocks, inside the grid, with areas
  # and aspects as asked up to rounding of each side.
  assert (active.sum(1) == np.where(np.arange(batch) % 2 == 0, 8, 2)).all()
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + bh <= h).all() and (left + bw <= w).all()
  for group, (_, scale) in enumerate(BLOCKS):
    rows = np.arange(batch) % 2 == group
    a, b = bh[rows][active[rows]], bw[rows][active[rows]]
    np.testing.assert_allclose(np.mean(a * b) / (scale * h * w), 1.0, atol=0.08)
    assert ((a - 0.5) / (b + 0.5) <= ASPECT[1] + 1e-6).all()
    assert ((a + 0.5) / np.maximum(b - 0.5, 0.5) >= ASPECT[0] - 1e-6).all()
    # Coverage of the union against an independent numpy sampler of the same distribution.
    want = _numpy_coverage(np.random.default_rng(group), 1000, h, w, *BLOCKS[group])
    np.testing.assert_allclose(union[rows].mean(), want, atol=0.02)

  ratio, context_ratio = 0.75, 0.15
  ctx, tgt = jax.jit(lambda k: masking.sample_multiblock(k, batch, (t, h, w), ratio,
                                                         context_ratio, BLOCKS, ASPECT))(key)
  ctx, tgt = np.asarray(ctx), np.asarray(tgt)
  m, c = round(h * w * ratio), round(h * w * context_ratio)
  assert tgt.shape == (batch, t * m) and ctx.shape == (batch, t * c)
  assert plan.multiblock_counts((t, h, w), ratio, context_ratio) == (t * c, t * m)
  assert (np.diff(tgt, axis=1) > 0).all() and (np.diff(ctx, axis=1) > 0).all()
  union_t = np.asarray(blocks_fn(jax.random.split(key, 3)[0])[0])  # the blocks behind the mask
  for i in range(0, batch, 3):
    assert not set(ctx[i]) & set(tgt[i])
    frames = tgt[i].reshape(t, m)  # a tube: the same spatial positions in every frame
    assert (frames - frames[:1] == (np.arange(t) * h * w)[:, None]).all()
    spatial_t, spatial_c = frames[0], ctx[i].reshape(t, c)[0]
    inside = union_t[i]
    # Targets come from the blocks first, context from outside them first.
    assert inside[spatial_t].sum() == min(m, inside.sum())
    assert (~inside[spatial_c]).sum() == min(c, (~inside).sum())


# --- the predictor's inputs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trainer():
  return train.StagePrograms(make_config(), jax.devices()[:1])


@pytest.mark.slow
def test_predictor_sees_only_context_tokens_and_mask_tokens(trainer):
  config, model = trainer.config, trainer.model
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  key = jax.random.key(7)
  video = jax.random.uniform(key, (2, *model.video_shape))
  ctx, tgt = vjepa.sample_masks(jax.random.key(8), 2, model, config)

  @jax.jit
  def run(video):
    _, _, prediction = vjepa.predict(state.params, state.frozen, video, ctx, tgt, model=model,
                                     spec=spec)
    target = vjepa.targets(state.teacher, state.params, state.frozen, None, video, model=model,
                           config=config, spec=spec)
    return prediction, masking.gather_tokens(target, tgt)

  def perturb(ids):
    """Replace the pixels of the tubelets at token ids (per clip) with noise."""
    pt, ph, pw = model.patch_size
    t, h, w = model.grid
    out = np.array(video)
    noise = np.random.default_rng(0).uniform(size=out.shape).astype(np.float32)
    for b in range(2):
      for i in np.asarray(ids[b]):
        ti, hi, wi = np.unravel_index(i, (t, h, w))
        sl = (b, slice(ti * pt, ti * pt + pt), slice(hi * ph, hi * ph + ph),
              slice(wi * pw, wi * pw + pw))
        out[sl] = noise[sl]
    return jnp.asarray(out)

  prediction, target = run(video)
  context = set(np.asarray(ctx[0]).tolist()) | set(np.asarray(ctx[1]).tolist())
  hidden = np.array([[i for i in range(model.num_tokens) if i not in set(np.asarray(ctx[b]))]
                     for b in range(2)])
  p_hidden, t_hidden = run(perturb(hidden))
  np.testing.assert_array_equal(np.asarray(p_hidden), np.asarray(prediction))
  assert np.abs(np.asarray(t_hidden) - np.asarray(target)).max() > 1e-3  # the teacher sees them
  p_ctx, _ = run(perturb(np.asarray(ctx)[:, :1]))
  assert context and np.abs(np.asarray(p_ctx) - np.asarray(prediction)).max() > 1e-4


# --- one compiled step at a frozen stage ----------------------------------------------------------------
@pytest.mark.slow
def test_step_keeps_frozen_blocks_and_teacher_out_of_the_optimizer(trainer):
  spec = trainer.spec_at(12)  # k = 2 of 3: embedding and blocks 1..2 frozen, target block 2
  assert spec.frozen_layers == 2 and spec.target == "teacher_block_2"
  state = trainer.init_state(trainer.spec_at(0))
  state = trainer.resplit(state, spec)
  video = jax.device_put(jax.random.randint(jax.random.key(0), (8, *trainer.model.video_shape),
                                            0, 255).astype(jnp.uint8), trainer.video_sharding)
  # Gradient w.r.t. the teacher is exactly zero (the targets are under stop-gradient).
  grad_t = jax.jit(jax.grad(lambda t: step_lib.vjepa_loss_fn(
      state.params, state.frozen, t, video, jax.random.key(1), model=trainer.model,
      config=trainer.config, spec=spec)[0]))(state.teacher)
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(grad_t))
  # No optimizer state for the frozen blocks or the teacher: every stacked moment has 1 layer.
  opt_leaves = jax.tree.leaves(state.opt_state)
  n_teacher = sum(x.size for x in jax.tree.leaves(state.teacher))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  assert sum(x.size for x in opt_leaves) < 2 * n_params + 16 < 2 * (n_params + n_teacher)
  assert "embed" not in state.params and "embed" in state.frozen
  encoder_moments = [x for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
                     if "'encoder'" in jax.tree_util.keystr(path)]
  assert encoder_moments and all(x.shape[0] == 1 for x in encoder_moments)
  before = jax.tree.map(np.array, (state.frozen, state.teacher, state.params))
  step = trainer.step_fn(spec, state, video)
  new, metrics = step(state, video)
  frozen0, _, params0 = before
  # Step 0 has learning rate 0 (warmup); a second step moves the trainable parameters.
  teacher0 = jax.tree.map(np.array, new.teacher)
  new, metrics = step(new, video)
  for a, b in zip(jax.tree.leaves(frozen0), jax.tree.leaves(new.frozen)):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert any(np.abs(a - np.asarray(b)).max() > 0 for a, b in
             zip(jax.tree.leaves(params0), jax.tree.leaves(new.params)))
  # The teacher moved by the EMA of the updated student (numpy, momentum at step 1).
  m = np.float32(metrics["ema_momentum"])
  np.testing.assert_allclose(m, 0.9 + 0.1 * 1 / 16, rtol=1e-6)
  student = {"embed": frozen0["embed"], "encoder": jax.tree.map(
      lambda f, p: np.concatenate([f, np.asarray(p)]), frozen0["encoder"], new.params["encoder"])}
  want = jax.tree.map(lambda t, s: m * t + (np.float32(1) - m) * s, teacher0, student)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(new.teacher)):
    np.testing.assert_allclose(np.asarray(b), a, rtol=1e-6, atol=1e-7)
  assert np.isfinite(float(metrics["loss"])) and 0 < float(metrics["feature_spread"])


# --- whole runs: resume with the teacher, meshes --------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vjepa_ref"))
  return workdir, train.run(make_config(), workdir, devices=jax.devices()[:1])


@pytest.mark.slow
def test_run_passes_stages_and_logs_collapse_statistics(reference):
  workdir, result = reference
  rows = ckpt_tests.records(workdir)
  # Stage k=0 for steps 0-5, k=1 for 6-9, k=2 from 10 (rows are logged after step + 1).
  assert [r["frozen_layers"] for r in rows] == [0] * 6 + [1] * 4 + [2] * 6
  assert {r["target"] for r in rows} == {"teacher_block_1", "teacher_block_2"}
  assert result.compiles == 3
  assert all(0 < r["feature_spread"] and 0 < r["target_spread"] and np.isfinite(r["loss"])
             for r in rows)
  assert set(result.state.teacher) == {"embed", "encoder"}
  # The summary's collapse flag is the last logged feature_spread against the stated 0.1.
  summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
  assert summary["collapsed"] == (rows[-1]["feature_spread"] < 0.1)


def test_collapse_flag_threshold():
  from layerlock_jax import train_step  # pylint: disable=g-import-not-at-top
  assert train_step.looks_collapsed({"feature_spread": 0.019}) is True   # no-EMA V-JEPA's end
  assert train_step.looks_collapsed({"feature_spread": 0.42}) is False   # V-JEPA with EMA
  assert train_step.looks_collapsed({"loss": 1.0}) is None


@pytest.mark.slow
def test_sigkill_then_rerun_is_bit_identical_with_the_teacher(tmp_path):
  # The reference is an uninterrupted run of the same command: a `python -m layerlock_jax.main`
  # process on one CPU device can differ in the last bits from this 8-device test process.
  ref_dir, work = str(tmp_path / "ref"), str(tmp_path / "w")
  flags = dict(SMALL)
  rc, out = ckpt_tests.finish(_launch(ref_dir, flags))
  assert rc == 0, out[-3000:]
  kill_at, drawn = ckpt_tests.kill_step(5, STEPS - 4)
  proc = _launch(work, flags)
  seen = ckpt_tests.wait_for_step(proc, work, kill_at)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  rc, out = ckpt_tests.finish(_launch(work, flags))
  note = f"{drawn}; killed at step >= {seen}"
  assert rc == 0, (note, out[-3000:])
  trainer = train.StagePrograms(make_config(), jax.devices()[:1])
  restored, ref = checkpoint.restore(work, trainer), checkpoint.restore(ref_dir, trainer)
  assert restored.step == STEPS, note
  assert ckpt_tests.leaves_equal(restored.state.teacher, ref.state.teacher), note
  assert ckpt_tests.leaves_equal(restored.state, ref.state), note
  assert (ckpt_tests.deterministic(ckpt_tests.records(work))
          == ckpt_tests.deterministic(ckpt_tests.records(ref_dir))), note


def _launch(workdir, flags):
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS}
  return subprocess.Popen(
      [sys.executable, "-m", "layerlock_jax.main",
       f"--config={ROOT / 'configs' / 'vjepa_tiny.py'}:layerlock", f"--workdir={workdir}",
       *[f"--config.{k}={v}" for k, v in flags.items()]], cwd=ROOT, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_fsdp_on_8_devices_matches_1_device_and_restores_across_meshes(reference, tmp_path):
  ref_dir, ref = reference
  config = make_config(**{"mesh.data": 2, "mesh.fsdp": 4, "mesh.preset": "fsdp",
                          "checkpoint_every": 0})
  config_validation.validate(config, num_devices=8)
  result = train.run(config, str(tmp_path / "eight"), devices=jax.devices()[:8])
  one = [r["loss"] for r in ckpt_tests.records(ref_dir)]
  eight = [r["loss"] for r in ckpt_tests.records(tmp_path / "eight")]
  np.testing.assert_allclose(eight, one, rtol=1e-4)
  # Per leaf, against the leaf's own scale: Adam divides each coordinate's update by its own
  # gradient scale, so a coordinate whose gradient is ~0 moves by up to lr in a direction set by
  # the last bits of an 8-way vs 1-way reduction (one bias leaf differs by up to 0.6% of its
  # largest entry on some CPUs; every other leaf by < 1e-5). A sharding error moves whole leaves.
  for a, b in zip(jax.tree.leaves(result.state.teacher), jax.tree.leaves(ref.state.teacher)):
    diff, scale = np.abs(np.asarray(a) - np.asarray(b)), np.abs(np.asarray(b))
    assert diff.max() <= 1e-2 * scale.max() and diff.mean() <= 2e-3 * scale.mean(), a.shape
  # The single-device checkpoint restored onto the 8-device FSDP mesh: same bits, new layout.
  back = checkpoint.restore(ref_dir, train.StagePrograms(config, jax.devices()[:8]))
  assert ckpt_tests.leaves_equal(back.state.teacher, ref.state.teacher)
  assert len(jax.tree.leaves(back.state.teacher)[0].sharding.device_set) == 8


# --- config errors and cost model -----------------------------------------------------------------------
def test_config_errors_name_the_field():
  bad = make_config(**{"masking.context_ratio": 0.6})
  with pytest.raises(config_validation.ConfigError, match="masking.context_ratio"):
    config_validation.validate(bad, num_devices=1)
  mae = make_config(**{"vjepa.enabled": False, "layerlock.enabled": False})
  with pytest.raises(config_validation.ConfigError, match="masking.type"):
    config_validation.validate(mae, num_devices=1)
  with pytest.raises(config_validation.ConfigError, match="vjepa.predictor.num_heads"):
    config_validation.validate(make_config(**{"vjepa.predictor.num_heads": 3}), num_devices=1)


def test_flops_count_teacher_forward_and_predictor():
  config = make_config()
  b, n, d, f = 8, 32, 32, 64
  c_tok, m_tok = plan.multiblock_counts((2, 4, 4), 0.5, 0.25)
  pw, pf = 16, 32
  block = lambda s, width, mlp: b * (8 * s * width ** 2 + 4 * s * s * width + 4 * s * width * mlp)
  p = 2 * 8 * 8 * 3
  for k, layer in ((0, 1), (2, 2)):
    got = flops.step_flops(config, k)
    embed = (1 if k else 2) * 2 * b * n * p * d
    enc = k * block(c_tok, d, f) + 3 * (3 - k) * block(c_tok, d, f)
    if k:
      enc -= 2 * b * c_tok * d * 3 * d  # no input gradient into block k+1's QKV
    predictor = 3 * (block(c_tok + m_tok, pw, pf) + 2 * b * c_tok * d * pw
                     + 2 * b * m_tok * pw * d)
    teacher = 2 * b * n * p * d + layer * block(n, d, f)
    assert got["model_flops"] == embed + enc + predictor + teacher, (k, got)
    assert got["target_forward"] == teacher
