"""Blockwise SSL: per-block parameters, gradient isolation, the three regimes, schedule and state.

References are independent of the code under test: segment boundaries and schedules are written out
by hand, the "block trained alone" update comes from an unrolled per-layer forward (vit.Block
applied layer by layer, no scan, no slicing helper), and gradient isolation is checked as exact
zeros of real gradients.
"""
import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax import masking
from layerlock_jax.methods import blockwise
from layerlock_jax.methods import objectives
from layerlock_jax.models import video_mae
from layerlock_jax.models import vit
from layerlock_jax import optimizer
from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax import train
from layerlock_jax import train_step as step_lib
from layerlock_jax.trainer import Trainer

BOUNDS = (1, 3, 4)  # uneven on purpose: blocks of 1, 2 and 1 layers


def small_config(regime="concurrent", boundaries=BOUNDS, **overrides):
  """4 frames x 16^2, 2x8x8 tubelets -> 2x2x2 = 8 tokens, 4 visible; a 4-layer encoder."""
  c = config_defaults.base_config()
  c.seed = 5
  c.total_steps = 12
  c.batch_size = 2
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 16, 4, 32, 2
  c.model.patch_size = (2, 8, 8)
  c.model.remat_policy = "none"         # remat is exercised elsewhere; here it only slows compiles
  c.model.decoder.width, c.model.decoder.depth = 8, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 16
  c.masking.ratio = 0.5
  c.optimizer.lr = 1e-2
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.5   # large, so decay leaking onto frozen or idle params would show
  c.optimizer.grad_clip = 0.0
  c.data.num_frames, c.data.image_size = 4, 16
  c.mesh.preset = "data_parallel"
  c.blockwise.enabled = True
  c.blockwise.regime = regime
  c.blockwise.boundaries = boundaries
  return config_loading.override(c, overrides)


def clip(seed=0, batch=2):
  return jax.random.randint(jax.random.key(seed), (batch, 4, 16, 16, 3), 0, 256,
                            jnp.int32).astype(jnp.uint8)


@functools.cache
def _init_params(config_json: str):
  # One init compile per distinct parameter tree, shared by the tests (compiles dominate their
  # time). Nothing donates these arrays: the steps below are jitted without donation.
  config = ml_collections.ConfigDict(json.loads(config_json))
  return nn.unbox(jax.jit(video_mae.VideoMAE(config).init)(jax.random.key(config.seed)))


def init(config):
  """The model and its initial parameters; the regime does not change the parameter tree."""
  shape_config = config.copy_and_resolve_references()
  shape_config.blockwise.regime = "concurrent"
  return video_mae.VideoMAE(config), _init_params(shape_config.to_json())


def leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def layers(stack, lo, hi):
  return jax.tree.map(lambda a: a[lo:hi], stack)


# --- partition of the encoder -------------------------------------------------------------------


def test_segment_boundaries_equal_and_uneven():
  c = config_defaults.base_config()
  c.blockwise.enabled = True
  assert plan.segments.boundaries(c, 12) == (3, 6, 9, 12)      # 4 blocks of 3 [P-code]
  c.blockwise.num_segments = 6
  assert plan.segments.boundaries(c, 12) == (2, 4, 6, 8, 10, 12)
  c.blockwise.boundaries = (2, 6, 12)
  assert plan.segments.boundaries(c, 12) == (2, 6, 12)
  for bad in ((2, 6, 11), (6, 2, 12), (0, 12)):
    c.blockwise.boundaries = bad
    with pytest.raises(ValueError, match="boundaries"):
      plan.segments.boundaries(c, 12)
  c.blockwise.boundaries, c.blockwise.num_segments = (), 5
  with pytest.raises(ValueError, match="num_segments"):
    plan.segments.boundaries(c, 12)


@pytest.mark.slow
def test_one_decoder_and_head_per_segment_and_standard_encoder():
  config = small_config()
  model, params = init(config)
  assert set(params) == {"embed", "encoder", "blockwise_decoders", "blockwise_heads"}
  names = {"segment_1", "segment_2", "segment_3"}
  assert set(params["blockwise_decoders"]) == names and set(params["blockwise_heads"]) == names
  plain_model, plain = init(small_config(**{"blockwise.enabled": False}))
  for name in names:
    # Each segment's decoder/head is exactly a plain MAE decoder/pixel head (same tree and shapes).
    for group, ref in (("blockwise_decoders", plain["decoder"]),
                       ("blockwise_heads", plain["pixel_head"])):
      assert (jax.tree.map(jnp.shape, params[group][name]) == jax.tree.map(jnp.shape, ref))
  # Independently initialised, not one shared decoder.
  d1, d2 = (params["blockwise_decoders"][n]["proj"]["kernel"] for n in ("segment_1", "segment_2"))
  assert not np.array_equal(d1, d2)
  # The encoder is the standard stacked tree, so evaluation reads it unchanged.
  assert jax.tree.map(jnp.shape, params["encoder"]) == jax.tree.map(jnp.shape, plain["encoder"])
  outs = model.block_outputs(params["embed"], [params["encoder"]], clip())
  assert outs.shape == (5, 2, 8, 16)
  ref = plain_model.block_outputs(params["embed"], [params["encoder"]], clip())
  np.testing.assert_array_equal(outs, ref)


# --- gradient isolation ---------------------------------------------------------------------------


def segment_loss_grads(config):
  """Gradient of every segment's own loss w.r.t. all parameters (one jit)."""
  model, params = init(config)
  spec = plan.stage_spec(config, 0, "pixels")

  def segment_loss(p, j):
    _, metrics = blockwise.loss_fn(p, {}, None, clip(), jax.random.key(1), 0, model=model,
                                   config=config, spec=spec)
    return metrics[f"segment_{j}_loss"]

  grads = jax.jit(lambda p: [jax.grad(segment_loss)(p, j) for j in (1, 2, 3)])(params)
  return params, grads


def nonzero(tree):
  return any(bool(np.any(np.asarray(x) != 0)) for x in jax.tree.leaves(tree))


def zero(tree):
  return all(bool(np.all(np.asarray(x) == 0)) for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_concurrent_gradient_never_crosses_a_segment_boundary():
  _, grads = segment_loss_grads(small_config("concurrent"))
  lo_hi = {1: (0, 1), 2: (1, 3), 3: (3, 4)}
  for j, g in zip((1, 2, 3), grads):
    lo, hi = lo_hi[j]
    for layer in range(4):
      inside = lo <= layer < hi
      layer_grad = jax.tree.map(lambda a, i=layer: a[i], g["encoder"])
      assert nonzero(layer_grad) == inside and zero(layer_grad) != inside, (j, layer)
    # The patch embedding is segment 1's input layer.
    assert (nonzero(g["embed"]) if j == 1 else zero(g["embed"])), j
    for group in ("blockwise_decoders", "blockwise_heads"):
      for name, sub in g[group].items():
        assert (nonzero(sub) if name == f"segment_{j}" else zero(sub)), (j, group, name)


@pytest.mark.slow
def test_e2e_only_the_last_loss_reaches_the_encoder():
  _, grads = segment_loss_grads(small_config("e2e"))
  for j, g in zip((1, 2, 3), grads):
    if j < 3:  # measurement decoders: they learn, the encoder does not hear them
      assert zero(g["encoder"]) and zero(g["embed"]), j
    else:      # the end-to-end objective reaches every layer and the embedding
      assert all(nonzero(jax.tree.map(lambda a, i=i: a[i], g["encoder"])) for i in range(4))
      assert nonzero(g["embed"])
    for group in ("blockwise_decoders", "blockwise_heads"):
      for name, sub in g[group].items():
        assert (nonzero(sub) if name == f"segment_{j}" else zero(sub)), (j, group, name)


# --- concurrent == each segment alone ------------------------------------------------------------


def make_state(config, params, tx, spec):
  return state_lib.TrainState.create(params, spec, seed=config.seed, tx=tx)


@pytest.mark.slow
def test_one_segment_step_equals_plain_mae():
  bw_config = small_config(boundaries=(4,))
  plain_config = small_config(**{"blockwise.enabled": False})
  bw_model, bw_params = init(bw_config)
  plain_model, plain_params = init(plain_config)
  plain_params = dict(plain_params, embed=bw_params["embed"], encoder=bw_params["encoder"],
                      decoder=bw_params["blockwise_decoders"]["segment_1"],
                      pixel_head=bw_params["blockwise_heads"]["segment_1"])
  lr = lambda step: 1e-2
  results = []
  for config, model, params in ((bw_config, bw_model, bw_params),
                                (plain_config, plain_model, plain_params)):
    tx = optimizer.make_optimizer(config.optimizer, lr)
    spec = plan.stage_spec(config, 0, "pixels")
    step = jax.jit(step_lib.make_train_step(model, config, spec, tx, lr))
    results.append(step(make_state(config, params, tx, spec), clip()))
  (bw_state, bw_metrics), (plain_state, plain_metrics) = results
  np.testing.assert_allclose(bw_metrics["segment_1_loss"], plain_metrics["pixel_loss"], rtol=1e-6)
  np.testing.assert_allclose(bw_metrics["loss"], plain_metrics["loss"], rtol=1e-6)
  new = bw_state.params
  for mine, theirs in ((new["embed"], plain_state.params["embed"]),
                       (new["encoder"], plain_state.params["encoder"]),
                       (new["blockwise_decoders"]["segment_1"], plain_state.params["decoder"]),
                       (new["blockwise_heads"]["segment_1"], plain_state.params["pixel_head"])):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), mine, theirs)


def unrolled(model, stack, x, ids, lo, hi):
  """Layers lo..hi-1 applied one by one (no scan), the independent reference forward."""
  positions = jnp.asarray(model.coords)[ids]
  block = vit.Block(**model.block)
  for i in range(lo, hi):
    x, _ = block.apply({"params": jax.tree.map(lambda a, i=i: a[i], stack["layers"])}, x,
                       positions)
  return x


def alone_update(model, config, params, video, key, j, tx):
  """Block j trained alone: its input is the (constant) output of blocks < j, its loss its own."""
  bounds = (0,) + BOUNDS
  visible, masked = masking.sample_mask(masking.split(key)[0], video.shape[0], model.grid,
                                        config.masking.ratio, config.masking.type)
  target = masking.gather_tokens(
      objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm), masked)
  x0 = masking.gather_tokens(model.embed(params["embed"], video), visible)
  stream = unrolled(model, params["encoder"], x0, visible, 0, bounds[j - 1])
  name = f"segment_{j}"
  theta = {"encoder": layers(params["encoder"], bounds[j - 1], bounds[j]),
           "decoder": params["blockwise_decoders"][name], "head": params["blockwise_heads"][name]}
  if j == 1:
    theta["embed"] = params["embed"]

  def loss(t):
    x = masking.gather_tokens(model.embed(t["embed"], video), visible) if j == 1 else stream
    x = unrolled(model, t["encoder"], x, visible, 0, bounds[j] - bounds[j - 1])
    feats = model.decode(t["decoder"], x, visible, masked)
    return objectives.mse(model.predict_pixels(t["head"], feats), target)

  updates, _ = tx.update(jax.grad(loss)(theta), tx.init(theta), theta)
  return optax.apply_updates(theta, updates)


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_concurrent_update_equals_each_segment_trained_alone(opt):
  """SGD makes the update linear in the gradient (any leak shows); AdamW (with weight decay) shows
  that the optimizer does not couple the blocks either. Adam's eps is raised for the comparison:
  some gradients are zero in exact arithmetic (attention is invariant to the key bias) and ~1e-9
  round-off in practice, which eps=1e-8 would blow up to +-lr steps that differ between any two
  correct implementations."""
  config = small_config("concurrent", **{"optimizer.eps": 1e-3})
  model, params = init(config)
  lr = lambda step: 1e-2
  tx = optax.sgd(0.5) if opt == "sgd" else optimizer.make_optimizer(config.optimizer, lr)
  spec = plan.stage_spec(config, 0, "pixels")
  video = clip(3)
  new_state, _ = jax.jit(step_lib.make_train_step(model, config, spec, tx, lr))(
      make_state(config, params, tx, spec), video)
  # The per-clip keys of step 0, as make_train_step draws them.
  key = masking.clip_keys(jax.random.fold_in(jax.random.key(config.seed), 0),
                          jnp.arange(video.shape[0], dtype=jnp.uint32))
  expected = jax.jit(lambda p: [alone_update(model, config, p, video, key, j, tx)
                                for j in (1, 2, 3)])(params)
  bounds = (0,) + BOUNDS
  for j in (1, 2, 3):
    name = f"segment_{j}"
    got, before = ({"encoder": layers(tree["encoder"], bounds[j - 1], bounds[j]),
                    "decoder": tree["blockwise_decoders"][name],
                    "head": tree["blockwise_heads"][name]}
                   for tree in (new_state.params, params))
    if j == 1:
      got["embed"], before["embed"] = new_state.params["embed"], params["embed"]
    assert jax.tree.structure(got) == jax.tree.structure(expected[j - 1])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got,
                 expected[j - 1])
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), got,
                         before)
    assert max(jax.tree.leaves(moved)) > 1e-4  # the step did move segment j


# --- sequential ---------------------------------------------------------------------------------


def test_sequential_schedule_stages_and_specs():
  config = small_config("sequential", **{"total_steps": 12})
  # Even split of 12 steps over 3 blocks: block starts 0, 4, 8; frozen prefix b_{j-1} = 0, 1, 3.
  table = plan.freeze_table(config, 4)
  assert [(s.start_step, s.frozen_layers, s.target) for s in table] == [
      (0, 0, "segment_1_pixels"), (4, 1, "segment_2_pixels"), (8, 3, "segment_3_pixels")]
  specs = [plan.stage_spec(config, s.frozen_layers, s.target) for s in table]
  assert [(s.frozen_layers, s.idle_layers, s.active_segment) for s in specs] == [
      (0, 3, 1), (1, 1, 2), (3, 0, 3)]
  config.blockwise.sequential_steps = (2, 3, 4)  # sums to 9 < 12: block 3 runs to the end
  table = plan.freeze_table(config, 4)
  assert [s.start_step for s in table] == [0, 2, 5]
  config.blockwise.sequential_steps = (2, 3)
  with pytest.raises(ValueError, match="sequential_steps"):
    plan.freeze_table(config, 4)
  for regime in ("concurrent", "e2e"):
    config = small_config(regime)
    assert [(s.start_step, s.frozen_layers) for s in plan.freeze_table(config, 4)] == [(0, 0)]
    spec = plan.stage_spec(config, 0, "pixels")
    assert (spec.regime, spec.boundaries, spec.active_segment, spec.idle_layers) == (
        regime, BOUNDS, 0, 0)


def test_sequential_learning_rate_restarts_per_segment():
  config = small_config("sequential", **{"total_steps": 100, "optimizer.warmup_steps": 10,
                                         "optimizer.lr": 1.0, "optimizer.min_lr": 0.0,
                                         "blockwise.sequential_steps": (40, 30, 30)})
  fn = optimizer.learning_rate_fn(config, plan.freeze_table(config, 4))
  # Windows [0, 40), [40, 70), [70, 100); warmups 10% of each: 4, 3, 3 steps.
  cos = lambda done, length: 0.5 * (1 + math.cos(math.pi * done / length))
  expected = {0: 0.0, 2: 0.5, 4: 1.0, 22: cos(18, 36), 39: cos(35, 36), 40: 0.0, 41: 1 / 3,
              43: 1.0, 55: cos(12, 27), 70: 0.0, 72: 2 / 3, 99: cos(26, 27)}
  for step, value in expected.items():
    np.testing.assert_allclose(float(fn(step)), value, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.slow
def test_partition_with_idle_suffix_round_trips():
  config = small_config("sequential")
  _, params = init(config)
  spec = plan.stage_spec(config, 1, "segment_2_pixels")  # segment 2 = layers 2..3 of 4
  trainable, frozen = state_lib.partition(params, spec)
  assert set(trainable) == {"encoder", "blockwise_decoders", "blockwise_heads"}
  assert set(trainable["blockwise_decoders"]) == {"segment_2"} == set(trainable["blockwise_heads"])
  assert set(frozen["blockwise_decoders"]) == {"segment_1", "segment_3"}
  depth = lambda tree: jax.tree.leaves(tree)[0].shape[0]
  assert (depth(frozen["encoder"]), depth(trainable["encoder"]), depth(frozen["encoder_idle"])) \
      == (1, 2, 1)
  assert "embed" in frozen
  assert leaves_equal(state_lib.merge(trainable, frozen), params)
  assert jax.tree.structure(state_lib.merge(trainable, frozen)) == jax.tree.structure(params)


def test_opt_state_moments_follow_layers_not_shapes():
  """Blocks 1 and 2 both have one layer; block 2's moments must start at zero, not inherit 1's."""
  tx = optax.adam(1e-3)
  old_p = {"encoder": {"w": jnp.zeros((1, 3))}}
  old = jax.tree.map(lambda x: x + 7.0, tx.init(old_p))
  new = tx.init({"encoder": {"w": jnp.zeros((1, 3))}})
  moved = state_lib.transfer_opt_state(old, new, old_layers=(0, 1), new_layers=(1, 2))
  assert np.all(np.asarray(moved[0].mu["encoder"]["w"]) == 0)
  assert int(moved[0].count) == int(old[0].count)  # the counter (LR schedule position) carries
  # LayerLock's case: the window's start moves forward, the overlapping layers keep moments.
  old = tx.init({"encoder": {"w": jnp.arange(12.0).reshape(4, 3)}})
  old = jax.tree.map(lambda x: x + jnp.arange(4.0).reshape(4, 1) if x.ndim == 2 else x, old)
  new = tx.init({"encoder": {"w": jnp.zeros((2, 3))}})
  moved = state_lib.transfer_opt_state(old, new, old_layers=(0, 4), new_layers=(2, 4))
  np.testing.assert_array_equal(moved[0].mu["encoder"]["w"][:, 0], [2.0, 3.0])


@pytest.mark.slow
def test_sequential_run_freezes_finished_segments_and_leaves_idle_ones_alone():
  """Through Trainer (the real stage loop pieces): bit-identical finished and idle
  blocks."""
  config = small_config("sequential", **{"total_steps": 9})
  trainer = Trainer(config, devices=jax.devices()[:1])
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  host = lambda s: jax.tree.map(np.array, s.full_params())  # steps donate
  start = host(state)
  bounds = (0,) + BOUNDS
  snapshots = {}
  for step in range(config.total_steps):
    new_spec = trainer.spec_at(step)
    if new_spec != spec:
      state, spec = trainer.resplit(state, new_spec), new_spec
      snapshots[spec.active_segment] = host(state)
      # The optimizer only ever holds the active segment (its layers, decoder and head), and its
      # moments start from zero: segment j must not inherit segment j-1's (the shapes may agree).
      mu = optax.tree_utils.tree_get(state.opt_state, "mu")
      assert jax.tree.structure(mu) == jax.tree.structure(state.params)
      assert set(state.params["blockwise_decoders"]) == {f"segment_{spec.active_segment}"}
      assert zero(mu)
    video = jax.device_put(clip(step), trainer.video_sharding)
    state, metrics = trainer.step_fn(spec, state, video)(state, video)
    assert ({k for k in metrics if k.startswith("segment_")}
            == {f"segment_{spec.active_segment}_loss"})
  end = host(state)
  assert trainer.compiles == 3
  per_segment = lambda full, j: (layers(full["encoder"], bounds[j - 1], bounds[j]),
                               full["blockwise_decoders"][f"segment_{j}"],
                               full["blockwise_heads"][f"segment_{j}"])
  # Block 1 (and the embedding) trained in stage 1, then never moved again.
  assert not leaves_equal(per_segment(snapshots[2], 1), per_segment(start, 1))
  assert leaves_equal(per_segment(end, 1), per_segment(snapshots[2], 1))
  assert leaves_equal(end["embed"], snapshots[2]["embed"])
  # Block 2 idle (bit-identical to init despite weight decay) until its stage, then trained, then
  # frozen; segment 3 idle until the last stage.
  assert leaves_equal(per_segment(snapshots[2], 2), per_segment(start, 2))
  assert not leaves_equal(per_segment(snapshots[3], 2), per_segment(start, 2))
  assert leaves_equal(per_segment(end, 2), per_segment(snapshots[3], 2))
  assert leaves_equal(per_segment(snapshots[3], 3), per_segment(start, 3))
  assert not leaves_equal(per_segment(end, 3), per_segment(start, 3))


@pytest.mark.slow
def test_train_run_logs_every_segment_loss(tmp_path):
  """The unchanged train loop runs a blockwise config; block losses land in metrics.jsonl."""
  config = small_config("concurrent", **{"total_steps": 3, "log_every": 1,
                                         "checkpoint_every": 0, "data.num_clips": 8})
  result = train.run(config, str(tmp_path), devices=jax.devices()[:1])
  assert result.compiles == 1
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert len(records) == 3
  for r in records:
    losses = [r[f"segment_{j}_loss"] for j in (1, 2, 3)]
    assert all(np.isfinite(losses)) and np.isclose(sum(losses), r["loss"], rtol=1e-5)
