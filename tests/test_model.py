"""Model pieces against independent references: sizes, patchify, targets, RoPE, masks, shapes."""
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax import masking
from layerlock_jax.methods import objectives
from layerlock_jax.models import video_mae
from layerlock_jax.models import vit
from layerlock_jax import plan

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config(name):
  return config_loading.load_config(ROOT / "configs" / f"{name}.py")


def block_params(d, f):
  """Hand count of one pre-LN block: qkv + out projections, 2-layer MLP, two LayerNorms."""
  return (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 2 * (2 * d)


def abstract_params(config):
  return nn.unbox(jax.eval_shape(video_mae.VideoMAE(config).init, jax.random.key(0)))


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", sorted(config_defaults.VIT_SIZES))
def test_encoder_parameter_count_matches_size_table(size):
  width, depth, mlp, _ = config_defaults.VIT_SIZES[size]
  config = config_defaults.vit_config(size)
  config.model.decoder.type = "light"
  params = abstract_params(config)
  assert count(params["encoder"]) == depth * block_params(width, mlp)
  # 16x224^2, tubelet 2x16x16: 8x14x14 tokens, learned 3-D table + patch projection.
  assert count(params["embed"]) == 1536 * width + width + 1568 * width


def test_vit4b_config_has_about_3_8b_parameters():
  config = load_config("vit4b")
  total = count(abstract_params(config))
  assert 3.7e9 <= total <= 3.9e9, total


def test_vit_b_encoder_is_about_86m():
  params = abstract_params(load_config("vit_b"))
  assert 85e6 <= count(params["encoder"]) + count(params["embed"]) <= 89e6


def test_patchify_matches_numpy_loops():
  rng = np.random.default_rng(0)
  video = rng.normal(size=(2, 4, 6, 8, 3)).astype(np.float32)
  out = np.asarray(vit.patchify(jnp.asarray(video), (2, 3, 4)))
  assert out.shape == (2, 2 * 2 * 2, 2 * 3 * 4 * 3)
  for b in range(2):
    n = 0
    for t in range(2):
      for h in range(2):
        for w in range(2):
          ref = video[b, 2 * t:2 * t + 2, 3 * h:3 * h + 3, 4 * w:4 * w + 4, :].reshape(-1)
          np.testing.assert_array_equal(out[b, n], ref)
          n += 1


def _numpy_targets(video, patch, norm):
  b, t, h, w, c = video.shape
  pt, ph, pw = patch
  rows = []
  for bi in range(b):
    for ti in range(t // pt):
      for hi in range(h // ph):
        for wi in range(w // pw):
          cube = video[bi, ti * pt:(ti + 1) * pt, hi * ph:(hi + 1) * ph, wi * pw:(wi + 1) * pw]
          cube = cube.astype(np.float64)
          if norm == "patch":
            flat = cube.reshape(-1)
            cube = (cube - flat.mean()) / np.sqrt(flat.var(ddof=1) + 1e-6)
          elif norm == "patch_channel":
            per = cube.reshape(-1, c)
            cube = (cube - per.mean(0)) / (per.std(0, ddof=1) + 1e-6)
          rows.append(cube.reshape(-1))
  return np.stack(rows).reshape(b, -1, pt * ph * pw * c)


@pytest.mark.parametrize("norm", ["none", "patch", "patch_channel"])
def test_pixel_targets_match_numpy_reference(norm):
  rng = np.random.default_rng(1)
  video = rng.integers(0, 256, size=(2, 4, 8, 8, 3), dtype=np.uint8)
  out = np.asarray(objectives.pixel_targets(jnp.asarray(video), (2, 4, 4), norm))
  ref = _numpy_targets(video.astype(np.float64) / 255.0, (2, 4, 4), norm)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_pixel_targets_at_ids_are_the_rows_of_the_full_targets():
  rng = np.random.default_rng(2)
  video = rng.integers(0, 256, size=(2, 4, 8, 8, 3), dtype=np.uint8)
  ids = np.array([[0, 3, 5], [7, 1, 6]], np.int32)  # unsorted, different per clip
  ref = _numpy_targets(video.astype(np.float64) / 255.0, (2, 4, 4), "patch")
  out = np.asarray(objectives.pixel_targets(jnp.asarray(video), (2, 4, 4), "patch",
                                            jnp.asarray(ids)))
  np.testing.assert_allclose(out, np.take_along_axis(ref, ids[..., None], 1), rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("posemb", ["learned_3d", "sincos", "sincos_1d"])
def test_embedding_at_ids_matches_numpy_projection_of_those_tubelets(posemb):
  """Embedding only some tokens = numpy: normalised pixels of those tubelets @ kernel + bias +
  the position table's rows at those ids."""
  config = tiny_config(posemb=posemb)
  config.model.input_mean, config.model.input_std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  model = video_mae.VideoMAE(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0)))["embed"]  # one compile, not per op
  rng = np.random.default_rng(3)
  video = rng.integers(0, 256, size=(2, 4, 16, 16, 3), dtype=np.uint8)
  ids = np.array([[6, 1, 2], [0, 7, 4]], np.int32)
  got = np.asarray(model.embed(params, jnp.asarray(video), jnp.asarray(ids)))
  x = (video.astype(np.float64) / 255.0 - np.array([0.4, 0.5, 0.6])) / np.array([0.2, 0.25, 0.3])
  patches = np.stack([x[b, 2 * t:2 * t + 2, 8 * h:8 * h + 8, 8 * w:8 * w + 8].reshape(-1)
                      for b in range(2) for t in range(2) for h in range(2) for w in range(2)])
  patches = patches.reshape(2, 8, -1)
  full = patches @ np.asarray(params["patch"]["kernel"], np.float64) + np.asarray(
      params["patch"]["bias"], np.float64)
  table = {"learned_3d": lambda: np.asarray(params.get("pos", np.zeros(1))).reshape(8, -1),
           "sincos": lambda: vit.sincos_3d(model.grid, 32),
           "sincos_1d": lambda: vit.sincos_1d_table(8, 32)}[posemb]()
  want = np.take_along_axis(full + table[None], ids[..., None], 1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  every = np.asarray(model.embed(params, jnp.asarray(video)))
  np.testing.assert_allclose(every, full + table[None], rtol=1e-4, atol=1e-4)


def test_clip_centred_latent_targets_match_numpy_and_drop_a_shared_clip_vector():
  rng = np.random.default_rng(0)
  targets = rng.normal(size=(3, 10, 1, 8)).astype(np.float32)  # (B, N, targets, D)
  want = targets - targets.astype(np.float64).mean(axis=1, keepdims=True)  # per clip and channel
  got = np.asarray(objectives.center_over_tokens(jnp.asarray(targets)))
  np.testing.assert_allclose(got, want, atol=1e-6)
  # A vector shared by every token of a clip (what an untrained block mostly outputs) is gone
  # after centring, and with it the part of the LayerNormed target a student could predict
  # without looking at its position.
  shared = rng.normal(size=(3, 1, 1, 8)).astype(np.float32) * 50
  moved = np.asarray(objectives.center_over_tokens(jnp.asarray(targets + shared)))
  np.testing.assert_allclose(moved, got, atol=1e-4)
  ln = np.asarray(objectives.normalize_latent(jnp.asarray(targets + shared), "layernorm"))
  assert np.abs(ln.mean(axis=1)).mean() > 0.5  # without centring: dominated by the shared vector


def test_rope_after_norm_matches_hand_rotation():
  # width 20: fractions (0.1, 0.25, 0.25) -> rotated parts of 2, 4, 4 features; 10 untouched.
  x = np.arange(1, 21, dtype=np.float32)[None, None]
  pos = np.array([[[3, 1, 2]]], np.int32)
  out = np.asarray(vit.apply_rope(jnp.asarray(x), jnp.asarray(pos), (0.1, 0.25, 0.25), 100.0))
  expected = x.copy()

  def rotate(start, d, p):
    half = d // 2
    for i in range(half):
      theta = p * 100.0 ** (-2.0 * i / d)
      a, b = x[0, 0, start + i], x[0, 0, start + half + i]
      expected[0, 0, start + i] = a * np.cos(theta) - b * np.sin(theta)
      expected[0, 0, start + half + i] = a * np.sin(theta) + b * np.cos(theta)

  rotate(0, 2, 3)   # time part
  rotate(2, 4, 1)   # height part
  rotate(6, 4, 2)   # width part
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_rope_dot_products_depend_only_on_relative_position():
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.normal(size=(1, 1, 2, 32)).astype(np.float32))  # (B, S, H, F)
  k = jnp.asarray(rng.normal(size=(1, 1, 2, 32)).astype(np.float32))
  frac = (0.25, 0.25, 0.25)

  def score(pq, pk):
    rq = vit.apply_rope(q, jnp.asarray([[pq]], jnp.int32), frac, 10_000.0)
    rk = vit.apply_rope(k, jnp.asarray([[pk]], jnp.int32), frac, 10_000.0)
    return np.asarray(jnp.sum(rq * rk, -1))

  np.testing.assert_allclose(score((1, 2, 3), (4, 0, 5)), score((3, 4, 6), (6, 2, 8)),
                             rtol=1e-4, atol=1e-4)
  assert not np.allclose(score((1, 2, 3), (4, 0, 5)), score((1, 2, 3), (1, 2, 3)))


def test_sincos_table_is_fixed_and_distinct_per_token():
  table = vit.sincos_3d((2, 3, 4), 48)
  assert table.shape == (24, 48)
  assert len({tuple(np.round(r, 6)) for r in table}) == 24
  # first feature of the time block is sin(t) for the token's time index
  coords = vit.token_grid((2, 3, 4))
  np.testing.assert_allclose(table[:, 0], np.sin(coords[:, 0]), atol=1e-6)


@pytest.mark.parametrize("mask_type", ["random", "tube"])
def test_masks_partition_tokens_with_a_fixed_count(mask_type):
  grid, ratio, batch = (4, 3, 5), 0.6, 6
  vis, msk = masking.sample_mask(jax.random.key(3), batch, grid, ratio, mask_type)
  vis, msk = np.asarray(vis), np.asarray(msk)
  n = 4 * 3 * 5
  m = plan.num_masked(grid, ratio, mask_type)
  assert msk.shape == (batch, m) and vis.shape == (batch, n - m)
  for b in range(batch):
    both = np.concatenate([vis[b], msk[b]])
    assert sorted(both.tolist()) == list(range(n))
    assert np.all(np.diff(vis[b]) > 0) and np.all(np.diff(msk[b]) > 0)
    if mask_type == "tube":
      spatial = msk[b].reshape(4, -1) % 15
      assert all(np.array_equal(spatial[0], s) for s in spatial)
  assert len({tuple(r) for r in msk}) > 1  # clips get different masks
  again = masking.sample_mask(jax.random.key(3), batch, grid, ratio, mask_type)
  np.testing.assert_array_equal(np.asarray(again[1]), msk)


def tiny_config(decoder="light", posemb="learned_3d"):
  c = config_defaults.base_config()
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 32, 3, 64, 2
  c.model.patch_size = (2, 8, 8)
  c.model.posemb = posemb
  c.model.decoder.type = decoder
  c.model.decoder.width, c.model.decoder.depth = 16, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 2, 32
  c.data.num_frames, c.data.image_size = 4, 16
  return c


@pytest.mark.parametrize("decoder", ["light", "query"])
@pytest.mark.parametrize("posemb", ["learned_3d", "sincos", "rope"])
def test_forward_shapes(decoder, posemb):
  config = tiny_config(decoder, posemb)
  model = video_mae.VideoMAE(config)

  def forward(key, video):
    """Every stage of the model; traced abstractly (shapes only, nothing compiled or run)."""
    params = nn.unbox(model.init(key))
    vis, msk = masking.sample_mask(jax.random.key(1), 2, model.grid, 0.75, "random")
    tokens = model.embed(params["embed"], video)
    x = model.run_stack(params["encoder"], masking.gather_tokens(tokens, vis), vis, remat=True)
    feats = model.decode(params["decoder"], x, vis, msk)
    return (tokens, x, feats, model.predict_pixels(params["pixel_head"], feats),
            model.predict_latents(params["latent_head"], feats),
            model.block_outputs(params["embed"], [params["encoder"]], video))

  shapes = jax.eval_shape(forward, jax.random.key(0), jnp.zeros((2, 4, 16, 16, 3), jnp.uint8))
  assert [s.shape for s in shapes] == [
      (2, 8, 32), (2, 2, 32), (2, 6, model.decoder_width), (2, 6, 2 * 8 * 8 * 3), (2, 6, 1, 32),
      (model.encoder_depth + 1, 2, 8, 32)]


def test_remat_and_plain_stacks_share_parameters_and_outputs():
  config = tiny_config()
  model = video_mae.VideoMAE(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0)))
  x = jax.random.normal(jax.random.key(1), (2, 5, 32))
  ids = jnp.broadcast_to(jnp.arange(5), (2, 5))
  a = model.run_stack(params["encoder"], x, ids, remat=True)
  b = model.run_stack(params["encoder"], x, ids, remat=False)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  # Splitting the stack anywhere gives the same output as running it whole.
  first = jax.tree.map(lambda p: p[:1], params["encoder"])
  rest = jax.tree.map(lambda p: p[1:], params["encoder"])
  c = model.run_stack(rest, model.run_stack(first, x, ids, remat=False), ids, remat=True)
  np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-5)


def _numpy_attention(q, k, v):
  """Float64 reference: softmax(q k^T / sqrt(Dh)) v per batch element and head, (B, S, H, Dh)."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", w, v)


def _numpy_attention_grads(q, k, v, g):
  """Float64 reference gradients of sum(attention(q, k, v) * g), derived by hand."""
  q, k, v, g = (np.asarray(t, np.float64) for t in (q, k, v, g))
  scale = 1 / np.sqrt(q.shape[-1])
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dv = np.einsum("bhqk,bqhd->bkhd", p, g)
  dp = np.einsum("bqhd,bkhd->bhqk", g, v)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
  return np.einsum("bhqk,bkhd->bqhd", ds, k), np.einsum("bhqk,bqhd->bkhd", ds, q), dv


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
def test_softmax_attention_values_and_gradients_match_numpy(dtype, tol):
  rng = np.random.default_rng(5)
  q, k, v, g = (rng.normal(size=(2, 7, 3, 8)).astype(np.float32) for _ in range(4))
  q *= 3.0  # peaked rows: the max subtraction matters
  args = [jnp.asarray(t, dtype) for t in (q, k, v)]
  as_float = lambda t: np.asarray(jnp.asarray(t, jnp.float32))
  rounded = [as_float(t) for t in args]  # the reference sees the same rounded inputs
  out = jax.jit(vit.softmax_attention)(*args)
  assert out.dtype == dtype
  np.testing.assert_allclose(as_float(out), _numpy_attention(*rounded), rtol=tol, atol=tol)
  loss = lambda *a: jnp.sum(vit.softmax_attention(*a).astype(jnp.float32) * g)
  for fn in (loss, jax.checkpoint(loss)):  # also as a remat'd block recomputes it
    grads = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))(*args)
    for got, want in zip(grads, _numpy_attention_grads(*rounded, g)):
      assert got.dtype == dtype
      np.testing.assert_allclose(as_float(got), want, rtol=tol, atol=tol * np.abs(want).max())
