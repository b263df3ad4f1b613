"""TrainState.create / full_params / group: the freeze split behind one object; the seed leaf.

Hand-built parameter trees (no model): each layer of the encoder stack holds its own index, so
where a block landed after a split is read off its values.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.models import video_mae
from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax import train_step as step_lib

DEPTH = 6


def full_tree():
  return {
      "embed": {"patch": {"kernel": jnp.full((3, 4), 0.5)}},
      "encoder": {"layers": {"w": jnp.arange(DEPTH, dtype=jnp.float32)[:, None]
                                  * jnp.ones((1, 4))}},
      "encoder_norm": {"scale": jnp.ones(4)},
      "decoder": {"w": jnp.full((4, 4), 2.0)},
      "pixel_head": {"w": jnp.full((4, 3), 3.0)},
      "latent_head": {"w": jnp.full((4, 4), 4.0)},
  }


def layer_ids(stack):
  return [int(v) for v in np.asarray(stack["layers"]["w"])[:, 0]]


def test_create_splits_at_the_freeze_boundary_and_full_params_inverts_it():
  full = full_tree()
  spec = plan.StageSpec(frozen_layers=2, latent=True, pixel_loss=False, target="block_2")
  st = state_lib.TrainState.create(full, spec, seed=7, tx=optax.adam(1e-3))
  assert layer_ids(st.frozen["encoder"]) == [0, 1]
  assert layer_ids(st.params["encoder"]) == [2, 3, 4, 5]
  # The embedding freezes with block 1; an inactive head is held frozen, an active one trains.
  assert set(st.frozen) == {"encoder", "embed", "pixel_head"}
  assert set(st.params) == {"encoder", "encoder_norm", "decoder", "latent_head"}
  # Optimizer state only for the trainable tree: Adam's moments mirror `params`, not `frozen`.
  assert jax.tree.structure(st.opt_state[0].mu) == jax.tree.structure(st.params)
  assert int(st.step) == 0 and st.seed.dtype == np.uint32 and int(st.seed) == 7
  back = st.full_params()
  assert jax.tree.structure(back) == jax.tree.structure(full)
  jax.tree.map(np.testing.assert_array_equal, back, full)
  # group: one sub-tree wherever this stage keeps it.
  np.testing.assert_array_equal(st.group("embed")["patch"]["kernel"],
                                full["embed"]["patch"]["kernel"])
  np.testing.assert_array_equal(st.group("decoder")["w"], full["decoder"]["w"])


def test_idle_suffix_keeps_depth_order():
  spec = plan.StageSpec(frozen_layers=1, idle_layers=2, regime="sequential")
  st = state_lib.TrainState.create(full_tree(), spec, seed=0, tx=optax.sgd(0.1))
  stacks = state_lib.encoder_stacks(st.params, st.frozen)
  assert [layer_ids(s) for s in stacks] == [[0], [1, 2, 3], [4, 5]]
  assert layer_ids(st.full_params()["encoder"]) == list(range(DEPTH))


def test_checkpoint_holds_every_field_but_the_seed():
  fields = {f.name for f in dataclasses.fields(state_lib.TrainState)}
  st = state_lib.TrainState.create(full_tree(), plan.StageSpec(), seed=3, tx=optax.sgd(0.1))
  assert set(st.checkpointed()) == fields - {"seed"}
  assert all(st.checkpointed()[k] is getattr(st, k) for k in state_lib.CHECKPOINTED)


def small_config():
  c = config_defaults.base_config()
  c.batch_size = 2
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 16, 2, 32, 2
  c.model.patch_size = (2, 4, 4)  # 16 tokens, half of them masked
  c.masking.ratio = 0.5
  c.model.decoder.width, c.model.decoder.depth = 16, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 32
  c.data.num_frames, c.data.image_size = 2, 16
  return c


def test_one_compiled_step_serves_every_seed_and_draws_from_the_state_seed():
  """The seed is an input of the step, not a constant: the program compiled for one state runs a
  state with another seed, and its masks follow that seed (same seed, same loss)."""
  config = small_config()
  model = video_mae.VideoMAE(config)
  full = nn.unbox(jax.jit(model.init)(jax.random.key(0)))
  spec = plan.StageSpec()
  tx = optax.sgd(0.0)  # no update: the loss is a function of the masks alone
  step = step_lib.make_train_step(model, config, spec, tx, lambda s: 0.0)
  video = jax.random.randint(jax.random.key(1), (2, 2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  make = lambda seed: state_lib.TrainState.create(full, spec, seed=seed, tx=tx)
  compiled = jax.jit(step).lower(make(0), video).compile()
  loss = {seed: float(compiled(make(seed), video)[1]["loss"]) for seed in (0, 5)}
  assert loss[0] != loss[5]
  assert float(compiled(make(5), video)[1]["loss"]) == loss[5]


def test_runs_that_differ_only_in_their_seed_share_the_init_program():
  """init_state takes the seed as an input too: a second seed loads the first one's compiled init
  from the persistent cache (conftest turns it on) instead of compiling again."""
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  compilation.install_cache_listener()
  states = {}
  # A seed no earlier run can have used, so that a program with the seed baked in would miss.
  fresh = int(np.random.default_rng().integers(1, 2**31))
  for seed in (0, fresh):
    config = small_config()
    config.seed = seed
    programs = Trainer(config, jax.devices()[:1])
    before = compilation.cache_events()
    states[seed] = programs.init_state(programs.spec_at(0))
    outcome = compilation.cache_outcome(before, compilation.cache_events())
  assert outcome == "hit"
  assert int(states[fresh].seed) == fresh and int(states[0].seed) == 0
  a, b = (jax.tree.leaves(states[s].params) for s in (0, fresh))
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))  # the key still follows the seed
