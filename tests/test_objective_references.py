"""The training objectives against references written here: the stage-k LayerLock loss (every target
normalisation, latent patch fraction, loss weight, keep_pixel_loss, the naive-latent target) and
the V-JEPA loss (L1 / L2 on LayerNormed teacher targets, with and without the EMA teacher).

The code under test is the public train step (`train_step.make_train_step`), run with plain SGD at
a known learning rate so that its gradient is read back from the parameter update, and its loss
from the logged metrics. The references recompose each loss from the micro model's pieces: the
encoder blocks applied one by one (no scan), the decoder / predictor and linear heads as public
model functions, and every loss-specific part (pixel patchify and normalisation, token gathers,
the latent patch subsample, the target normalisations, the weights, L1 / L2) written in plain
numpy in float64 for the values. For the gradients the same reference runs on jax.numpy and is
differentiated by JAX. The random draws (masks, the subsample's uniforms) follow the documented
key derivation: key = fold_in(key(seed), step), clip r draws from fold_in(key, r), split in two
(mask key, latent key).
"""
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from layerlock_jax import config_defaults
from layerlock_jax import config_loading
from layerlock_jax import masking
from layerlock_jax import plan
from layerlock_jax import schedule
from layerlock_jax import state as state_lib
from layerlock_jax import train_step as step_lib
from layerlock_jax import vjepa
from layerlock_jax.models import video_mae
from layerlock_jax.models import vit

ROOT = pathlib.Path(__file__).resolve().parent.parent
LR = 1024.0  # SGD learning rate: the gradient is (params - new params) / LR, exact up to rounding
SEED, STEP, BATCH = 5, 3, 2
EPS = 1e-6  # the normalisations' epsilon (LayerNorm inside the sqrt, standardize outside)


def micro_config(**overrides):
  c = config_defaults.base_config()
  c.seed = SEED
  c.total_steps = 40
  c.batch_size = BATCH
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 32, 3, 64, 2
  c.model.patch_size = (2, 4, 4)
  c.model.posemb = "rope"
  c.model.decoder.width, c.model.decoder.depth = 16, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 32
  c.masking.ratio = 0.5
  c.objective.pixel_norm = "patch"
  c.data.num_frames, c.data.image_size = 4, 8  # 2x2x2 = 8 tokens: 4 visible, 4 masked
  c.layerlock.enabled = True
  c.layerlock.max_frozen = 2
  for dotted, value in overrides.items():
    *path, leaf = dotted.split(".")
    node = c
    for name in path:
      node = node[name]
    node[leaf] = value
  return c


def clip(shape, seed=0):
  return jax.random.randint(jax.random.key(seed), (BATCH, *shape), 0, 256,
                            jnp.int32).astype(jnp.uint8)


def init_full(model, seed=0):
  full = nn.unbox(jax.jit(model.init)(jax.random.key(seed)))
  # Non-zero biases and LayerNorm offsets, so a mis-wired bias or norm cannot hide.
  rng = np.random.default_rng(seed + 1)
  return jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.05 * rng.standard_normal(a.shape),
                                            a.dtype), full)


def step_outputs(model, config, spec, full, video, latent_weight_fn=None, teacher=None):
  """Run the public train step once with SGD(LR): (metrics, gradient tree of the trainable params,
  new state, old state). `teacher`: V-JEPA's EMA teacher (default: the student's copy)."""
  tx = optax.sgd(LR)
  state = state_lib.TrainState.create(full, spec, seed=SEED, tx=tx,
                                      teacher=teacher or vjepa.init_teacher(full, config))
  state = state.replace(step=np.asarray(STEP, np.int32))
  step = jax.jit(step_lib.make_train_step(model, config, spec, tx, lambda s: LR,
                                          latent_weight_fn))
  new, metrics = step(state, video)
  grads = jax.tree.map(lambda a, b: (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / LR,
                       state.params, new.params)
  return jax.device_get(metrics), grads, new, state


def clip_keys():
  """Per-clip (mask key, latent key), from the documented derivation."""
  key = jax.random.fold_in(jax.random.key(SEED), STEP)
  pairs = [jax.random.split(jax.random.fold_in(key, r)) for r in range(BATCH)]
  return jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])


# --- plain-numpy pieces ----------------------------------------------------------------------------
def np_patchify(video, patch):
  """(B, T, H, W, 3) -> (B, N, pt*ph*pw*3), tokens in (t, h, w) order, values in (pt, ph, pw, C)."""
  b, t, h, w, c = video.shape
  pt, ph, pw = patch
  x = video.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, pt * ph * pw * c)


def xp_normalize(xp, x, norm):
  if norm == "none":
    return x
  mean = x.mean(-1, keepdims=True)
  d = x.shape[-1]
  if norm == "layernorm":  # biased variance, epsilon inside the root, no affine
    return (x - mean) / xp.sqrt(((x - mean) ** 2).sum(-1, keepdims=True) / d + EPS)
  if norm == "standardize":  # unbiased std, epsilon outside the root
    return (x - mean) / (xp.sqrt(((x - mean) ** 2).sum(-1, keepdims=True) / (d - 1)) + EPS)
  raise AssertionError(norm)


def xp_gather(xp, x, ids):
  """x (B, N, ...) at ids (B, S) -> (B, S, ...), by explicit row indexing."""
  return xp.stack([x[b][ids[b]] for b in range(ids.shape[0])])


def xp_head(xp, params, feats):
  """PatchHead: feats (B, S, F) -> (B, S, heads, out) = feats @ kernel + bias."""
  kernel, bias = params["proj"]["kernel"], params["proj"]["bias"]
  f, heads, out = kernel.shape
  y = feats @ kernel.reshape(f, heads * out) + bias.reshape(heads * out)
  return y.reshape(*feats.shape[:2], heads, out)


def blocks_one_by_one(model, stack, x, ids):
  """Encoder blocks applied one at a time (no scan): the list of every block's output."""
  block = vit.Block(**model.block)
  positions = jnp.asarray(model.coords)[ids]
  outs = []
  for i in range(video_mae.stack_depth(stack)):
    x, _ = block.apply({"params": jax.tree.map(lambda a, i=i: a[i], stack["layers"])}, x,
                       positions)
    outs.append(x)
  return outs


def as_numpy(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- LayerLock -------------------------------------------------------------------------------------
def layerlock_draws(model, config):
  """The step's random draws: (visible ids, masked ids, subsampled columns of the masked ids)."""
  ll, nl = config.layerlock, config.naive_latent
  mask_keys, latent_keys = clip_keys()
  visible, masked = masking.sample_mask(mask_keys, BATCH, model.grid, config.masking.ratio,
                                        config.masking.type)
  fraction = 1.0 if nl.enabled else ll.latent_patch_fraction
  m = masked.shape[1]
  count = max(1, int(round(fraction * m)))
  if count < m:  # the subsample: the `count` smallest of one uniform draw per masked column
    u = np.asarray(jax.vmap(lambda key: jax.random.uniform(key, (m,)))(latent_keys))
    columns = np.sort(np.argsort(u, axis=1)[:, :count], axis=1)
  else:
    columns = np.broadcast_to(np.arange(m), (BATCH, m))
  return np.asarray(visible), np.asarray(masked), columns


def layerlock_reference(model, config, spec, params, frozen, video, xp, weight, draws):
  """The stage loss recomposed: (total, pixel loss or None, latent loss). xp = np gives float64
  values; xp = jnp a differentiable function of `params`."""
  ll, nl, k = config.layerlock, config.naive_latent, spec.frozen_layers
  visible, masked, columns = draws
  n = model.num_tokens
  all_ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (BATCH, n))
  embed = params["embed"] if "embed" in params else frozen["embed"]
  tokens = model.embed(embed, video)  # (B, N, D), the full clip
  x = xp_gather(jnp, tokens, visible)
  if k:
    x = blocks_one_by_one(model, frozen["encoder"], x, visible)[-1]
  x = blocks_one_by_one(model, params["encoder"], x, visible)[-1]
  feats = model.decode(params["decoder"], x, visible, masked)  # (B, M, F) at the masked ids

  if nl.enabled:
    layer = nl.layer
    own = jax.tree.map(lambda a: jax.lax.stop_gradient(a[:layer]), params["encoder"])
    target_all = jax.lax.stop_gradient(
        blocks_one_by_one(model, own, jax.lax.stop_gradient(tokens), all_ids)[-1])
    norm = nl.target_norm
  else:
    target_all = blocks_one_by_one(model, frozen["encoder"], tokens, all_ids)[-1]
    norm = ll.target_norm
  masked_np = masked
  ids = np.take_along_axis(masked_np, columns, axis=1)

  if xp is np:
    params, feats, target_all = as_numpy(params), as_numpy(feats), as_numpy(target_all)
  targets = xp_normalize(xp, xp_gather(xp, target_all, ids), norm)
  predictions = xp_head(xp, params["latent_head"], xp_gather(xp, feats, columns))[:, :, 0]
  latent = ((predictions - targets) ** 2).mean()
  total, pixel = weight * latent, None
  if spec.pixel_loss:
    raw = np_patchify(np.asarray(video, np.float64) / 255.0, model.patch_size)
    raw = np.stack([raw[b][masked_np[b]] for b in range(BATCH)])
    mean = raw.mean(-1, keepdims=True)
    pix = (raw - mean) / np.sqrt(raw.var(-1, keepdims=True, ddof=1) + EPS)  # MAE norm_pix
    pix = pix if xp is np else jnp.asarray(pix, jnp.float32)
    pixel = ((xp_head(xp, params["pixel_head"], feats)[:, :, 0] - pix) ** 2).mean()
    total = total + pixel
  return total, pixel, latent


LAYERLOCK_CASES = {
    # name: (frozen blocks k, config overrides)
    "layernorm": (2, {"layerlock.target_norm": "layernorm"}),
    "standardize_half_of_masked_weight_0.3": (
        2, {"layerlock.target_norm": "standardize", "layerlock.latent_patch_fraction": 0.5,
            "layerlock.latent_loss_weight": 0.3}),
    "no_norm_quarter_of_masked_weight_2": (
        1, {"layerlock.target_norm": "none", "layerlock.latent_patch_fraction": 0.25,
            "layerlock.latent_loss_weight": 2.0}),
    "layernorm_without_pixel_loss": (
        1, {"layerlock.target_norm": "layernorm", "layerlock.keep_pixel_loss": False}),
    "standardize_without_pixel_loss_weight_0.5": (
        2, {"layerlock.target_norm": "standardize", "layerlock.keep_pixel_loss": False,
            "layerlock.latent_loss_weight": 0.5}),
    "naive_latent_block_2_no_norm_weight_0.5": (
        0, {"layerlock.enabled": False, "naive_latent.enabled": True, "naive_latent.layer": 2,
            "naive_latent.weight": 0.5, "naive_latent.target_norm": "none"}),
    "naive_latent_block_1_layernorm": (
        0, {"layerlock.enabled": False, "naive_latent.enabled": True, "naive_latent.layer": 1,
            "naive_latent.target_norm": "layernorm"}),
}


@pytest.mark.parametrize("case", list(LAYERLOCK_CASES))
def test_layerlock_stage_loss_and_gradients_match_numpy_reference(case):
  k, overrides = LAYERLOCK_CASES[case]
  config = micro_config(**overrides)
  model = video_mae.VideoMAE(config)
  spec = plan.stage_spec(config, k, f"block_{k}")
  assert spec.latent and spec.frozen_layers == k
  assert spec.pixel_loss == (config.naive_latent.enabled or config.layerlock.keep_pixel_loss)
  naive = config.naive_latent.enabled
  weight = config.naive_latent.weight if naive else config.layerlock.latent_loss_weight
  full = init_full(model)
  video = clip(model.video_shape)

  metrics, grads, new, state = step_outputs(
      model, config, spec, full, video,
      schedule.naive_latent_weight_fn(config) if naive else None)

  draws = layerlock_draws(model, config)
  total, pixel, latent = layerlock_reference(model, config, spec, state.params, state.frozen,
                                             video, np, weight, draws)
  np.testing.assert_allclose(float(metrics["latent_loss"]), latent, rtol=2e-5)
  np.testing.assert_allclose(float(metrics["loss"]), total, rtol=2e-5)
  if pixel is None:
    assert "pixel_loss" not in metrics
  else:
    np.testing.assert_allclose(float(metrics["pixel_loss"]), pixel, rtol=2e-5)

  ref_grads = jax.jit(jax.grad(lambda p: layerlock_reference(
      model, config, spec, p, state.frozen, video, jnp, weight, draws)[0]))(state.params)
  assert jax.tree.structure(ref_grads) == jax.tree.structure(grads)
  for path, want in jax.tree_util.tree_flatten_with_path(ref_grads)[0]:
    got = grads
    for entry in path:
      got = got[entry.key]
    want = np.asarray(want, np.float64)
    scale = np.abs(want).max()
    assert scale > 0 or "pixel_head" not in jax.tree_util.keystr(path), path
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * scale + 1e-9,
                               err_msg=jax.tree_util.keystr(path))
  # Frozen blocks (and the embedding from k = 1 on) come out of the step unchanged.
  for a, b in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(new.frozen), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- V-JEPA ----------------------------------------------------------------------------------------
VJEPA_SMALL = {
    "batch_size": BATCH, "total_steps": 16, "model.width": 32, "model.depth": 3,
    "model.mlp_dim": 64, "model.num_heads": 2, "vjepa.predictor.width": 16,
    "vjepa.predictor.depth": 1, "vjepa.predictor.num_heads": 2, "vjepa.predictor.mlp_dim": 32,
    "data.num_frames": 4, "data.image_size": 32, "masking.ratio": 0.5,
    "masking.context_ratio": 0.25, "seed": SEED,
}


def vjepa_draws(model, config):
  """(context ids, target ids) of the step: one multi-block draw from the batch's mask key."""
  key = jax.random.fold_in(jax.random.key(SEED), STEP)
  mask_key, _ = jax.random.split(key)
  context_ids, target_ids = vjepa.sample_masks(mask_key, BATCH, model, config)
  return np.asarray(context_ids), np.asarray(target_ids)


def vjepa_reference(model, config, params, teacher, video, xp, draws, *, stop_target=True):
  """V-JEPA loss recomposed (no frozen blocks): the student encoder on the context tokens, the
  predictor at the target ids, targets = LayerNorm (no affine, biased variance) of the teacher's
  (or, without EMA, the student's own) last block on the full clip, L1 or L2."""
  context_ids, target_ids = draws
  n = model.num_tokens
  all_ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (BATCH, n))
  tokens = model.embed(params["embed"], video)
  x = blocks_one_by_one(model, params["encoder"], xp_gather(jnp, tokens, context_ids),
                        context_ids)[-1]
  prediction = model.predict_features(params["predictor"], x, context_ids, target_ids)
  if teacher:
    out = blocks_one_by_one(model, teacher["encoder"], model.embed(teacher["embed"], video),
                            all_ids)[-1]
  else:
    out = blocks_one_by_one(model, params["encoder"], tokens, all_ids)[-1]
  if stop_target:
    out = jax.lax.stop_gradient(out)
  if xp is np:
    prediction, out = as_numpy(prediction), as_numpy(out)
  target = xp_normalize(xp, xp_gather(xp, out, np.asarray(target_ids)), "layernorm")
  diff = prediction - target
  return xp.abs(diff).mean() if config.vjepa.loss == "l1" else (diff ** 2).mean()


def tree_max_abs(tree):
  return max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("ema", [True, False])
def test_vjepa_loss_and_gradients_match_numpy_reference(loss, ema):
  config = config_loading.load_config(f"{ROOT / 'configs' / 'vjepa_tiny.py'}",
                                      {**VJEPA_SMALL, "vjepa.loss": loss, "vjepa.ema": ema})
  assert config.masking.type == "multiblock"
  model = video_mae.VideoMAE(config)
  spec = plan.stage_spec(config, 0, "")
  full = init_full(model)
  video = clip(model.video_shape)
  teacher = {}
  if ema:  # a teacher apart from the student, so the targets cannot come from the wrong one
    other = init_full(model, seed=3)
    teacher = {name: other[name] for name in vjepa.TEACHER_GROUPS}
  metrics, grads, _, state = step_outputs(model, config, spec, full, video, teacher=teacher)
  draws = vjepa_draws(model, config)
  want = vjepa_reference(model, config, state.params, state.teacher, video, np, draws)
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=2e-5)
  np.testing.assert_allclose(float(metrics["latent_loss"]), want, rtol=2e-5)

  ref = lambda stop: jax.jit(jax.grad(lambda p: vjepa_reference(
      model, config, p, state.teacher, video, jnp, draws, stop_target=stop)))(state.params)
  through = ref(ema)  # with EMA the targets are under stop-gradient; without, they are not
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(through), strict=True):
    b = np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max() + 1e-9)

  if ema:
    # No gradient reaches the teacher: exactly zero, leaf by leaf.
    grad_t = jax.jit(jax.grad(lambda t: step_lib.vjepa_loss_fn(
        state.params, state.frozen, t, video, jax.random.fold_in(jax.random.key(SEED), STEP),
        model=model, config=config, spec=spec)[0]))(state.teacher)
    assert all(not np.asarray(g).any() for g in jax.tree.leaves(grad_t))
    assert tree_max_abs(grads) > 0
  else:
    # The target's own gradient (total minus the prediction-side part) is far from zero, and the
    # step's gradient carries it.
    stopped = ref(True)
    target_part = jax.tree.map(lambda t, s: np.asarray(t, np.float64) - np.asarray(s), through,
                               stopped)
    assert tree_max_abs(target_part) > 0.05 * tree_max_abs(through)
    step_minus_stopped = jax.tree.map(lambda g, s: g - np.asarray(s), grads, stopped)
    np.testing.assert_allclose(tree_max_abs(step_minus_stopped), tree_max_abs(target_part),
                               rtol=1e-2)

