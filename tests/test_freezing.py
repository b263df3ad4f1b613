"""LayerLock freezing: frozen means frozen, stage 0 is plain MAE, gradients and targets are right."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax import masking
from layerlock_jax.methods import layerlock
from layerlock_jax.models import vit
from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax.trainer import Trainer


def small_config(**layerlock):
  c = config_defaults.base_config()
  c.seed = 3
  c.total_steps = 40
  c.batch_size = 4
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 32, 4, 64, 2
  c.model.patch_size = (2, 8, 8)
  c.model.posemb = "rope"
  c.model.remat_policy = "nothing_saveable"
  c.model.decoder.width, c.model.decoder.depth = 16, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 32
  c.masking.ratio = 0.5
  c.optimizer.lr = 1e-2
  c.optimizer.warmup_steps = 1
  c.optimizer.weight_decay = 0.5        # large, so any leak of decay into frozen params shows
  c.data.num_frames, c.data.image_size = 4, 16
  c.mesh.preset = "data_parallel"
  for key, value in layerlock.items():
    c.layerlock[key] = value
  return c


def videos(n, seed=0):
  key = jax.random.key(seed)
  return [jax.random.randint(jax.random.fold_in(key, i), (4, 4, 16, 16, 3), 0, 256,
                             jnp.int32).astype(jnp.uint8) for i in range(n)]


def run_steps(trainer, state, spec, clips):
  metrics = None
  for clip in clips:
    video = jax.device_put(clip, trainer.video_sharding)
    state, metrics = trainer.step_fn(spec, state, video)(state, video)
  return state, metrics


def same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def one_device():
  return jax.devices()[:1]


@pytest.mark.slow
def test_stage0_of_layerlock_is_plain_mae_bit_for_bit():
  plain = small_config(enabled=False)
  locked = small_config(enabled=True, pixel_steps=10, interval=5, max_frozen=2)
  results = []
  for config in (plain, locked):
    trainer = Trainer(config, one_device())
    spec = trainer.spec_at(0)
    assert spec == plan.StageSpec(0, latent=False, pixel_loss=True, target="pixels")
    state = trainer.init_state(spec)
    results.append(run_steps(trainer, state, spec, videos(2)))
  (s1, m1), (s2, m2) = results
  assert same(s1.params, s2.params) and same(s1.opt_state, s2.opt_state)
  assert float(m1["loss"]) == float(m2["loss"])


def test_frozen_parameters_bit_identical_and_without_optimizer_state():
  config = small_config(enabled=True, explicit=((2, 1), (4, 2)), max_frozen=2,
                        mini_warmup_steps=2)
  trainer = Trainer(config, one_device())
  clips = videos(8)
  spec0 = trainer.spec_at(0)
  state = trainer.init_state(spec0)
  state, _ = run_steps(trainer, state, spec0, clips[:2])

  spec1 = trainer.spec_at(2)
  assert (spec1.frozen_layers, spec1.latent, spec1.target) == (1, True, "block_1")
  state = trainer.resplit(state, spec1)
  frozen_at_1 = jax.device_get(state.frozen)
  trainable_at_1 = jax.device_get(state.params)
  assert set(frozen_at_1) == {"embed", "encoder"}
  state, metrics = run_steps(trainer, state, spec1, clips[2:4])
  assert np.isfinite(float(metrics["latent_loss"]))
  assert same(state.frozen, frozen_at_1)
  assert not same(state.params["encoder"], trainable_at_1["encoder"])  # the rest does train

  spec2 = trainer.spec_at(4)
  state = trainer.resplit(state, spec2)
  state, _ = run_steps(trainer, state, spec2, clips[4:8])
  assert same(state.frozen["embed"], frozen_at_1["embed"])
  first_block = jax.tree.map(lambda a: a[:1], state.frozen["encoder"])
  assert same(first_block, frozen_at_1["encoder"])
  assert jax.tree.leaves(state.frozen["encoder"])[0].shape[0] == 2

  # No optimizer state for frozen parameters: every moment tree mirrors the trainable tree only.
  n_trainable = sum(x.size for x in jax.tree.leaves(state.params))
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  assert sum(x.size for x in moments) == 2 * n_trainable  # Adam mu and nu


@pytest.mark.slow
def test_trainable_gradients_equal_unsplit_gradients():
  """Stage k with a pixel target vs the unsplit model: same loss, and the gradient of every
  trainable parameter is the unsplit gradient (a stop-gradient below block k+1 cannot change the
  gradient of parameters above it)."""
  config = small_config(enabled=True, target="pixel", pixel_steps=10, interval=5, max_frozen=2)
  trainer = Trainer(config, one_device())
  full = nn.unbox(jax.jit(trainer.model.init)(jax.random.key(0)))
  video = videos(1)[0]
  key = jax.random.key(7)

  def grads(spec, params, frozen):
    fn = jax.value_and_grad(layerlock.loss_fn, has_aux=True)
    return jax.jit(lambda p, f: fn(p, f, None, video, key, 0, model=trainer.model, config=config,
                                   spec=spec))(params, frozen)

  spec0 = plan.StageSpec(0, latent=False, pixel_loss=True)
  spec2 = plan.StageSpec(2, latent=False, pixel_loss=True)
  (loss0, _), g0 = grads(spec0, *state_lib.partition(full, spec0))
  (loss2, _), g2 = grads(spec2, *state_lib.partition(full, spec2))
  np.testing.assert_allclose(float(loss2), float(loss0), rtol=1e-6)
  assert "embed" not in g2 and "embed" in g0
  g0_trainable, _ = state_lib.partition(g0, spec2)
  for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g0_trainable), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


@pytest.mark.slow
def test_resplit_keeps_adam_state_of_still_trainable_layers():
  config = small_config(enabled=True, pixel_steps=2, interval=2, max_frozen=2)
  trainer = Trainer(config, one_device())
  spec0 = trainer.spec_at(0)
  state = trainer.init_state(spec0)
  state, _ = run_steps(trainer, state, spec0, videos(2))
  old_adam = state.opt_state[1][0]
  spec1 = plan.StageSpec(1, latent=True, pixel_loss=True, target="block_1")
  new = state_lib.resplit(state, spec1, trainer.tx)
  new_adam = new.opt_state[1][0]
  assert int(new_adam.count) == int(old_adam.count) == 2
  for old_leaf, new_leaf in zip(jax.tree.leaves(old_adam.mu["encoder"]),
                                jax.tree.leaves(new_adam.mu["encoder"]), strict=True):
    np.testing.assert_array_equal(np.asarray(new_leaf), np.asarray(old_leaf)[1:])
  for old_leaf, new_leaf in zip(jax.tree.leaves(old_adam.nu["decoder"]),
                                jax.tree.leaves(new_adam.nu["decoder"]), strict=True):
    np.testing.assert_array_equal(np.asarray(new_leaf), np.asarray(old_leaf))
  assert "embed" not in new_adam.mu and "latent_head" in new_adam.mu
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(new_adam.mu["latent_head"]))
  # merge(partition(.)) is the identity on parameters.
  np.testing.assert_array_equal(
      np.asarray(jax.tree.leaves(new.full_params()["encoder"])[0]),
      np.asarray(jax.tree.leaves(state.params["encoder"])[0]))


@pytest.mark.parametrize("multi_target", [False, True])
def test_latent_target_is_frozen_prefix_on_full_clip(multi_target):
  config = small_config(enabled=True, multi_target=multi_target, pixel_steps=10, interval=5,
                        max_frozen=2)
  trainer = Trainer(config, one_device())
  model = trainer.model
  full = nn.unbox(jax.jit(model.init)(jax.random.key(0)))
  k = 2
  frozen_encoder = jax.tree.map(lambda a: a[:k], full["encoder"])
  tokens = model.embed(full["embed"], videos(1)[0])
  got = np.asarray(layerlock.layerlock_targets(model, frozen_encoder, tokens,
                                              multi_target=multi_target))
  # Independent reference: apply the blocks one by one, unscanned, to ALL tokens.
  positions = jnp.broadcast_to(jnp.asarray(model.coords), tokens.shape[:2] + (3,))
  block = vit.Block(**model.block)
  x, outs = tokens, []
  for layer in range(k):
    layer_params = jax.tree.map(lambda a, i=layer: a[i], frozen_encoder["layers"])
    x, _ = block.apply({"params": layer_params}, x, positions)
    outs.append(np.asarray(x))
  expected = np.stack(outs, axis=2) if multi_target else outs[-1][:, :, None]
  assert got.shape == expected.shape == (4, model.num_tokens, k if multi_target else 1, 32)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_masked_positions_get_targets_the_student_never_sees():
  config = small_config(enabled=True, pixel_steps=10, interval=5, max_frozen=2)
  model = Trainer(config, one_device()).model
  full = nn.unbox(jax.jit(model.init)(jax.random.key(0)))
  tokens = model.embed(full["embed"], videos(1)[0])
  vis, _ = masking.sample_mask(jax.random.key(0), 4, model.grid, 0.5, "random")
  prefix = jax.tree.map(lambda a: a[:1], full["encoder"])
  on_visible = model.run_stack(prefix, masking.gather_tokens(tokens, vis), vis, remat=False)
  on_full = layerlock.layerlock_targets(model, prefix, tokens, multi_target=False)[:, :, 0]
  # Attention over the full clip differs from attention over visible tokens only.
  assert not np.allclose(np.asarray(on_visible),
                         np.asarray(masking.gather_tokens(on_full, vis)), atol=1e-4)
