"""The rolled layer scan (model.scan_unroll = 1, the default on GPU and TPU) runs on CPU here: the
rolled and the unrolled stacks give the same forward and gradients for the encoder, the V-JEPA
predictor and a stage with a frozen prefix, and both equal the blocks applied one by one; the
automatic choice of the unroll factor per platform.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layerlock_jax import config_loading
from layerlock_jax import masking
from layerlock_jax import plan
from layerlock_jax import train_step as step_lib
from layerlock_jax.models import video_mae

import test_objective_references as refs

TOL = dict(rtol=2e-5, atol=2e-6)


def test_resolve_scan_unroll_per_platform():
  full = video_mae.FULL_UNROLL
  assert full >= 1 << 10  # unrolls any encoder depth
  assert video_mae.resolve_scan_unroll(0, platform="cpu") == full
  for accelerator in ("gpu", "cuda", "rocm", "tpu", "accelerator"):
    assert video_mae.resolve_scan_unroll(0, platform=accelerator) == 1, accelerator
  for explicit in (1, 2, 5):  # an explicit factor wins on every platform
    for platform in ("cpu", "gpu", "tpu"):
      assert video_mae.resolve_scan_unroll(explicit, platform=platform) == explicit
  # Without a platform: where this process compiles (the CPU in CI).
  want = full if jax.default_backend() == "cpu" else 1
  assert video_mae.resolve_scan_unroll(0) == want
  assert video_mae.VideoMAE(refs.micro_config(**{"model.scan_unroll": 0})).unroll == want
  assert video_mae.VideoMAE(refs.micro_config(**{"model.scan_unroll": 1})).unroll == 1


def models(**overrides):
  """(rolled, unrolled) models of one config."""
  rolled = video_mae.VideoMAE(refs.micro_config(**{**overrides, "model.scan_unroll": 1}))
  unrolled = video_mae.VideoMAE(refs.micro_config(**{**overrides, "model.scan_unroll": 64}))
  assert (rolled.unroll, unrolled.unroll) == (1, 64)
  return rolled, unrolled


def assert_trees_close(a, b, **tol):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b),
                          strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path),
                               **tol)


@pytest.mark.parametrize("remat", [False, True])
def test_rolled_encoder_equals_unrolled_and_blocks_one_by_one(remat):
  rolled, unrolled = models(**{"model.depth": 4})
  full = refs.init_full(rolled)
  tokens = rolled.embed(full["embed"], refs.clip(rolled.video_shape))
  ids = jnp.broadcast_to(jnp.arange(rolled.num_tokens, dtype=jnp.int32), tokens.shape[:2])
  probe = jax.random.normal(jax.random.key(1), tokens.shape)

  def forward_and_grads(model):
    fn = lambda p, x: jnp.sum(probe * model.run_stack(p, x, ids, remat=remat))
    out = jax.jit(lambda p, x: model.run_stack(p, x, ids, remat=remat))(full["encoder"], tokens)
    return out, jax.jit(jax.grad(fn, argnums=(0, 1)))(full["encoder"], tokens)

  out_r, grads_r = forward_and_grads(rolled)
  out_u, grads_u = forward_and_grads(unrolled)
  by_one = refs.blocks_one_by_one(unrolled, full["encoder"], tokens, ids)
  np.testing.assert_allclose(np.asarray(out_r), np.asarray(by_one[-1]), **TOL)
  np.testing.assert_allclose(np.asarray(out_r), np.asarray(out_u), **TOL)
  assert_trees_close(grads_r, grads_u, **TOL)
  ref_grads = jax.jit(jax.grad(lambda p, x: jnp.sum(
      probe * refs.blocks_one_by_one(unrolled, p, x, ids)[-1]), argnums=(0, 1)))(full["encoder"],
                                                                               tokens)
  assert_trees_close(grads_r, ref_grads, **TOL)
  # Every block's output (multi-target LayerLock, evaluation) from the rolled stack too.
  _, all_r = rolled.run_stack(full["encoder"], tokens, ids, remat=False, return_all=True)
  for got, want in zip(all_r, by_one, strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def test_rolled_predictor_equals_unrolled():
  overrides = {**refs.VJEPA_SMALL, "vjepa.predictor.depth": 3, "model.depth": 2}
  rolled, unrolled = (video_mae.VideoMAE(config_loading.load_config(
      f"{refs.ROOT / 'configs' / 'vjepa_tiny.py'}", {**overrides, "model.scan_unroll": unroll}))
                      for unroll in (1, 64))
  assert (rolled.predictor.unroll, unrolled.predictor.unroll) == (1, 64)
  full = refs.init_full(rolled)
  context_ids, target_ids = masking.sample_mask(jax.random.key(2), refs.BATCH, rolled.grid, 0.5,
                                                "random")
  context = jax.random.normal(jax.random.key(3), context_ids.shape + (rolled.width,))

  def forward_and_grads(model):
    fn = lambda p, x: model.predict_features(p, x, context_ids, target_ids)
    out = jax.jit(fn)(full["predictor"], context)
    probe = jax.random.normal(jax.random.key(4), out.shape)
    grads = jax.jit(jax.grad(lambda p, x: jnp.sum(probe * fn(p, x)), argnums=(0, 1)))(
        full["predictor"], context)
    return out, grads

  out_r, grads_r = forward_and_grads(rolled)
  out_u, grads_u = forward_and_grads(unrolled)
  np.testing.assert_allclose(np.asarray(out_r), np.asarray(out_u), **TOL)
  assert_trees_close(grads_r, grads_u, **TOL)
  assert float(jnp.abs(grads_r[0]["body"]["blocks"]["layers"]["mlp1"]["kernel"][0]).max()) > 0


def test_rolled_stage_with_a_frozen_prefix_equals_unrolled():
  """Stage k = 2 of a 4-block LayerLock encoder: the frozen prefix (a 2-block scan, forward only),
  the trainable blocks (remat) and the latent targets of the prefix, rolled vs unrolled."""
  overrides = {"model.depth": 4, "layerlock.latent_patch_fraction": 0.5}
  rolled, unrolled = models(**overrides)
  config = refs.micro_config(**overrides)
  spec = plan.stage_spec(config, 2, "block_2")
  full = refs.init_full(rolled)
  from layerlock_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  params, frozen = state_lib.partition(full, spec)
  video = refs.clip(rolled.video_shape)
  keys = masking.clip_keys(jax.random.key(9), jnp.arange(refs.BATCH, dtype=jnp.uint32))

  def loss_and_grads(model):
    fn = jax.value_and_grad(step_lib.loss_fn, has_aux=True)
    return jax.jit(lambda p: fn(p, frozen, video, keys, 0, model=model, config=config,
                                spec=spec))(params)

  (loss_r, metrics_r), grads_r = loss_and_grads(rolled)
  (loss_u, metrics_u), grads_u = loss_and_grads(unrolled)
  np.testing.assert_allclose(float(loss_r), float(loss_u), rtol=2e-6)
  np.testing.assert_allclose(float(metrics_r["latent_loss"]), float(metrics_u["latent_loss"]),
                             rtol=2e-6)
  assert_trees_close(grads_r, grads_u, **TOL)
  assert "embed" not in grads_r and float(metrics_r["latent_loss"]) > 0
  tokens = rolled.embed(frozen["embed"], video)
  targets = step_lib.layerlock_targets(rolled, frozen["encoder"], tokens, multi_target=False)
  ids = jnp.broadcast_to(jnp.arange(rolled.num_tokens, dtype=jnp.int32), tokens.shape[:2])
  by_one = refs.blocks_one_by_one(unrolled, frozen["encoder"], tokens, ids)
  np.testing.assert_allclose(np.asarray(targets[:, :, 0]), np.asarray(by_one[-1]), **TOL)
