"""Tests for the analytic FLOP model (layerlock_jax/flops.py).

The references are hand counts written out below and XLA's own FLOP count of small, UNROLLED
(python-loop) stacks written here with jax.numpy, never the module's output fed back to itself.
"""

import jax
import jax.numpy as jnp
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax import flops
from layerlock_jax import plan


def step_flops(config, k: int = 0, **kwargs):
  """flops.step_flops at the stage with k frozen blocks (its spec as the freeze table makes it)."""
  target = plan.block_target(k) if k else plan.PIXELS
  return flops.step_flops(config, plan.stage_spec(config, k, target), **kwargs)



def _tiny_config(**overrides):
  """A clip of 4x8x8 with (2,4,4) tubelets: N = 2*2*2 = 8 tokens of P = 2*4*4*3 = 96 values.

  Width 16, 2 blocks, MLP 32; 75% masking hides 6 tokens and leaves 2 visible; a light decoder of
  width 8, 1 block, MLP 16; batch 2; no remat.
  """
  c = config_defaults.base_config()
  c.data.num_frames, c.data.image_size = 4, 8
  c.model.patch_size = (2, 4, 4)
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 16, 2, 32, 2
  c.model.decoder.width, c.model.decoder.depth, c.model.decoder.mlp_dim = 8, 1, 16
  c.model.decoder.num_heads = 2
  c.model.remat_policy = "none"
  c.masking.ratio = 0.75
  c.batch_size = 2
  # Keyword names spell the dotted field with "__" (model__depth=3 -> model.depth).
  return config_loading.override(c, {k.replace("__", "."): v for k, v in overrides.items()})


# Hand counts for _tiny_config (B=2), each matmul as 2*m*k*n.
EMBED_FWD = 2 * (2 * 2) * 96 * 16                     # 4 visible tokens, 96 -> 16 = 12_288
EMBED_FWD_FULL = 2 * (2 * 8) * 96 * 16                # 16 tokens (a latent stage) = 49_152
ENC_BLOCK_S2 = (2 * (2 * 2) * 16 * 48                 # QKV on 4 tokens           = 6_144
                + 2 * (2 * (2 * 2 * 16) * 2)          # scores + values, 2 clips  = 512
                + 2 * (2 * 2) * 16 * 16               # output projection         = 2_048
                + 2 * (2 * (2 * 2) * 16 * 32))        # MLP up + down             = 8_192
ENC_QKV_S2 = 2 * (2 * 2) * 16 * 48                    # = 6_144
ENC_BLOCK_S8 = (2 * 16 * 16 * 48                      # full clip, 8 tokens x 2   = 24_576
                + 2 * (2 * (8 * 8 * 16) * 2)          #                           = 8_192
                + 2 * 16 * 16 * 16                    #                           = 8_192
                + 2 * (2 * 16 * 16 * 32))             #                           = 32_768
DEC_PROJ = 2 * (2 * 2) * 16 * 8                       # 4 visible tokens, 16 -> 8 = 1_024
DEC_BLOCK = (2 * (2 * 8) * 8 * 24                     # 8 tokens (2 vis + 6 queries) x 2 clips
             + 2 * (2 * (8 * 8 * 8) * 2)
             + 2 * (2 * 8) * 8 * 8
             + 2 * (2 * (2 * 8) * 8 * 16))            # = 6_144 + 4_096 + 2_048 + 8_192
PIXEL_HEAD = 2 * (2 * 6) * 8 * 96                     # 12 queries, 8 -> 96       = 18_432


def test_hand_counts_match_xla():
  """The hand counts above against XLA's FLOP count of the same computation in jax.numpy."""
  ones = lambda *shape: jnp.ones(shape)
  matmul = lambda a, b: a @ b
  # Dense layers: XLA counts a dot as exactly 2*m*k*n.
  assert _xla_flops(matmul, ones(4, 96), ones(96, 16)) == EMBED_FWD
  assert _xla_flops(matmul, ones(16, 96), ones(96, 16)) == EMBED_FWD_FULL
  assert _xla_flops(matmul, ones(4, 16), ones(16, 8)) == DEC_PROJ
  assert _xla_flops(matmul, ones(12, 8), ones(8, 96)) == PIXEL_HEAD
  assert _xla_flops(matmul, ones(4, 16), ones(16, 48)) == ENC_QKV_S2

  def block_dots(x, w):
    """The matmuls of a block, in its order and shapes (softmax, activation and residual adds,
    which the hand counts leave out, left out here too)."""
    b, s, d = x.shape
    heads = lambda t: t.reshape(b, s, _H, d // _H)
    q, k, v = jnp.split(x @ w["qkv"], 3, axis=-1)
    scores = jnp.einsum("bqhd,bkhd->bhqk", heads(q), heads(k))
    x = jnp.einsum("bhqk,bkhd->bqhd", scores, heads(v)).reshape(b, s, d) @ w["out"]
    return (x @ w["up"]) @ w["down"]

  for count, (clips, seq, d, f) in ((ENC_BLOCK_S2, (2, 2, 16, 32)), (ENC_BLOCK_S8, (2, 8, 16, 32)),
                                    (DEC_BLOCK, (2, 8, 8, 16))):
    w = {"qkv": ones(d, 3 * d), "out": ones(d, d), "up": ones(d, f), "down": ones(f, d)}
    assert _xla_flops(block_dots, ones(clips, seq, d), w) == count, (clips, seq, d, f)


def test_block_flops_hand_count():
  # seq 3, width 4, mlp 8, batch 2 -> 6 tokens.
  qkv = 2 * 6 * 4 * 12          # 576
  attention = 2 * (2 * 3 * 3 * 4) * 2  # scores and values, per clip, 2 clips: 288
  out = 2 * 6 * 4 * 4           # 192
  mlp = 2 * (2 * 6 * 4 * 8)     # 768
  assert flops.block_flops(3, 4, 8, batch=2) == qkv + attention + out + mlp == 1824
  # Linear in the batch, quadratic only through attention.
  assert flops.block_flops(3, 4, 8, batch=6) == 3 * 1824


def test_token_geometry_of_the_default_clip():
  # 16x224x224 in 2x16x16 tubelets: 8*14*14 = 1568 tokens; 95% masked -> round(1489.6) = 1490.
  geo = plan.token_geometry(config_defaults.base_config())
  assert geo == {"num_tokens": 1568, "patch_dim": 1536, "num_masked": 1490,
                 "num_visible": 78, "num_queries": 1490}
  # Tube masking rounds per frame: 8 frames x round(0.95 * 196 = 186.2) = 8 x 186 = 1488.
  config = config_defaults.base_config()
  config.masking.type = "tube"
  assert plan.token_geometry(config)["num_masked"] == 1488


def test_step_flops_tiny_config_unfrozen():
  f = step_flops(_tiny_config())
  assert f["patch_embed"] == 2 * EMBED_FWD             # forward + weight gradient only
  assert f["encoder_frozen"] == 0
  assert f["encoder_trainable"] == 3 * 2 * ENC_BLOCK_S2
  assert f["decoder"] == 3 * (DEC_PROJ + DEC_BLOCK)
  assert f["heads"] == 3 * PIXEL_HEAD
  assert f["target_forward"] == 0 and f["remat_recompute"] == 0
  assert f["model_flops"] == f["hardware_flops"] == 245_760 == (
      24_576 + 101_376 + 64_512 + 55_296)
  assert all(isinstance(v, int) for v in f.values())
  # Everything scales with the batch; the default batch is config.batch_size.
  assert step_flops(_tiny_config(), batch_size=8)["model_flops"] == 4 * 245_760


def test_freezing_saves_the_backward_of_the_frozen_prefix():
  config = _tiny_config(layerlock__enabled=True, layerlock__target="pixel")
  f0 = step_flops(config, 0)
  f1 = step_flops(config, 1)
  # Block 1 goes from 3x to 1x (saves 2/3 of its training cost), the patch embedding loses its
  # weight gradient, and block 2's QKV no longer forms an input gradient.
  assert f0["model_flops"] - f1["model_flops"] == 2 * ENC_BLOCK_S2 + EMBED_FWD + ENC_QKV_S2
  assert f1["encoder_frozen"] == ENC_BLOCK_S2
  assert f1["encoder_trainable"] == 3 * ENC_BLOCK_S2 - ENC_QKV_S2
  assert f1["patch_embed"] == EMBED_FWD
  for key in ("decoder", "heads", "target_forward"):
    assert f1[key] == f0[key]
  # All encoder blocks frozen: nothing in the encoder is trained, and the decoder's input
  # projection reads a stop-gradient so it loses its input gradient (3x -> 2x).
  f2 = step_flops(config, 2)
  assert f2["encoder_trainable"] == 0 and f2["encoder_frozen"] == 2 * ENC_BLOCK_S2
  assert f2["decoder"] == 3 * DEC_BLOCK + 2 * DEC_PROJ


def test_freezing_saving_at_vit_b_scale():
  # The same rule at real size: each further frozen block saves exactly 2x its forward.
  config = config_defaults.base_config()
  config.layerlock.enabled, config.layerlock.target = True, "pixel"
  config.batch_size = 1
  block = flops.block_flops(78, 768, 3072, batch=1)
  totals = [step_flops(config, k)["model_flops"] for k in range(1, 6)]
  assert all(a - b == 2 * block for a, b in zip(totals, totals[1:]))


def test_latent_target_adds_the_full_clip_frozen_forward_and_latent_heads():
  common = dict(layerlock__enabled=True, layerlock__latent_patch_fraction=0.5)
  pixel = step_flops(_tiny_config(layerlock__target="pixel", **common), 1)
  latent = step_flops(_tiny_config(layerlock__target="latent", **common), 1)
  # Frozen prefix on all 8 tokens: block 1 (the embedding of all tokens is shared, so the
  # frozen embedding runs on all 16 tokens instead of the 4 visible ones).
  assert latent["target_forward"] == ENC_BLOCK_S8
  assert latent["patch_embed"] == EMBED_FWD_FULL and pixel["patch_embed"] == EMBED_FWD
  # round(0.5 * 6) = 3 latent queries per clip, head 8 -> 16, trained (3x).
  latent_head = 3 * (2 * (2 * 3) * 8 * 16)
  assert latent["heads"] == pixel["heads"] + latent_head
  assert latent["model_flops"] - pixel["model_flops"] == (ENC_BLOCK_S8 + latent_head
                                                          + EMBED_FWD_FULL - EMBED_FWD)
  # Stage 0 of a latent run is a pixel stage: no target forward.
  assert step_flops(_tiny_config(layerlock__target="latent", **common), 0)[
      "target_forward"] == 0
  # Dropping the pixel loss drops the pixel head; multi_target at k=2 has two latent heads
  # and a two-block full-clip prefix.
  no_pixel = step_flops(_tiny_config(layerlock__target="latent",
                                           layerlock__keep_pixel_loss=False, **common), 1)
  assert no_pixel["heads"] == latent_head
  # A tiny fraction still keeps one latent patch per clip: round(0.01 * 6) = 0 -> 1.
  few = step_flops(_tiny_config(layerlock__enabled=True, layerlock__target="latent",
                                      layerlock__latent_patch_fraction=0.01), 1)
  assert few["heads"] == 3 * PIXEL_HEAD + 3 * (2 * (2 * 1) * 8 * 16)
  multi = step_flops(_tiny_config(layerlock__target="latent",
                                        layerlock__multi_target=True, **common), 2)
  assert multi["heads"] == 3 * PIXEL_HEAD + 2 * latent_head
  assert multi["target_forward"] == 2 * ENC_BLOCK_S8


def test_naive_latent_adds_stop_gradient_forward_and_head():
  base = step_flops(_tiny_config())
  naive = step_flops(_tiny_config(naive_latent__enabled=True))  # layer -1: middle = 1
  assert naive["target_forward"] == ENC_BLOCK_S8
  assert naive["patch_embed"] == 2 * EMBED_FWD_FULL and base["patch_embed"] == 2 * EMBED_FWD
  assert naive["heads"] - base["heads"] == 3 * (2 * (2 * 6) * 8 * 16)
  deeper = step_flops(_tiny_config(naive_latent__enabled=True, naive_latent__layer=2))
  assert deeper["target_forward"] == 2 * ENC_BLOCK_S8


@pytest.mark.parametrize("policy", ["none", "dots_saveable", "everything_saveable"])
def test_remat_free_policies(policy):
  f = step_flops(_tiny_config(model__remat_policy=policy), 1)
  assert f["remat_recompute"] == 0 and f["hardware_flops"] == f["model_flops"]


def test_remat_nothing_saveable_recomputes_trained_block_forwards():
  config = _tiny_config(model__remat_policy="nothing_saveable")
  for k in (0, 1, 2):
    f = step_flops(config, k)
    # Trainable encoder blocks and the decoder block, whole forward; never the frozen prefix,
    # nor the dense layers outside block stacks (embedding, decoder projection, heads).
    assert f["remat_recompute"] == (2 - k) * ENC_BLOCK_S2 + DEC_BLOCK
    assert f["hardware_flops"] == f["model_flops"] + f["remat_recompute"]
  # MFU's numerator does not move with the policy.
  assert f["model_flops"] == step_flops(_tiny_config(), 2)["model_flops"]


def test_remat_no_batch_dims_policy_recomputes_attention_einsums():
  # Dense outputs are saved; the two attention einsums (batch dims b, h) are recomputed.
  f = step_flops(_tiny_config(model__remat_policy="dots_with_no_batch_dims_saveable"))
  # 2 encoder blocks x 512 and 1 decoder block x 4_096: the attention terms of ENC_BLOCK_S2 and
  # DEC_BLOCK above.
  assert f["remat_recompute"] == 2 * 512 + 4_096


def test_query_decoder_borrows_the_last_backbone_blocks():
  # depth 3 with a 1-block query decoder: 2 encoder blocks on the 2 visible tokens, then one
  # backbone block (width 16, MLP 32) on 2 visible + 6 query tokens = 8 tokens, like ENC_BLOCK_S8.
  config = _tiny_config(model__depth=3, model__decoder__type="query",
                        model__decoder__depth=1, model__remat_policy="nothing_saveable")
  f = step_flops(config)
  assert plan.encoder_depth(config) == 2
  assert f["encoder_trainable"] == 3 * 2 * ENC_BLOCK_S2
  assert f["decoder"] == 3 * ENC_BLOCK_S8                # no input projection
  assert f["heads"] == 3 * (2 * (2 * 6) * 16 * 96)       # pixel head from width 16
  # Remat covers the decoder blocks too.
  assert f["remat_recompute"] == 2 * ENC_BLOCK_S2 + ENC_BLOCK_S8
  # Only encoder blocks can be frozen.
  assert step_flops(config, 2)["encoder_trainable"] == 0
  with pytest.raises(ValueError):
    step_flops(config, 3)


def test_bad_inputs_raise():
  with pytest.raises(ValueError):
    step_flops(_tiny_config(model__remat_policy="some_policy"))
  with pytest.raises(ValueError):
    step_flops(_tiny_config(data__image_size=10))   # 10 is not a multiple of 4
  with pytest.raises(ValueError):
    step_flops(_tiny_config(), -1)


# --- cross-check against XLA's own count ---------------------------------------------------------

_B, _S, _D, _F, _H, _P, _L = 2, 32, 64, 256, 4, 96, 4


def _xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return cost["flops"]


def _block(x, w):
  """Matmul skeleton of a pre-LN block (norms omitted, as in the model): QKV, attention, MLP."""
  b, s, d = x.shape
  q, k, v = jnp.split(x @ w["qkv"], 3, axis=-1)
  heads = lambda t: t.reshape(b, s, _H, d // _H)
  probs = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", heads(q), heads(k)), axis=-1)
  x = x + jnp.einsum("bhqk,bkhd->bqhd", probs, heads(v)).reshape(b, s, d) @ w["out"]
  return x + jax.nn.relu(x @ w["up"]) @ w["down"]


def _params():
  keys = iter(jax.random.split(jax.random.key(0), 4 * _L + 1))
  shapes = {"qkv": (_D, 3 * _D), "out": (_D, _D), "up": (_D, _F), "down": (_F, _D)}
  blocks = [{n: jax.random.normal(next(keys), s) for n, s in shapes.items()} for _ in range(_L)]
  return jax.random.normal(next(keys), (_P, _D)), blocks


def test_block_flops_matches_xla_on_an_unrolled_stack():
  embed, blocks = _params()
  patches = jnp.ones((_B, _S, _P))

  def forward(embed, blocks, patches):
    h = patches @ embed
    for w in blocks:  # python loop: every block appears in the HLO, unlike a rolled scan
      h = _block(h, w)
    return h

  predicted = _L * flops.block_flops(_S, _D, _F, batch=_B) + 2 * _B * _S * _P * _D
  measured = _xla_flops(forward, embed, blocks, patches)
  # XLA also counts softmax, relu and residual adds, which the model omits: a few % at most.
  assert predicted <= measured <= 1.05 * predicted


def test_freezing_rule_matches_xla_gradient_cost():
  """Training cost with k frozen blocks, per XLA, against the 1x / 2x / 3x rules."""
  embed, blocks = _params()
  patches = jnp.ones((_B, _S, _P))
  block = flops.block_flops(_S, _D, _F, batch=_B)
  qkv = 2 * (_B * _S) * _D * (3 * _D)
  embed_fwd = 2 * (_B * _S) * _P * _D

  def grad_cost(k):
    def loss(trainable, frozen, patches):
      h = patches @ (frozen[0] if k else trainable[0])
      for w in frozen[1]:
        h = _block(h, w)
      if k:
        h = jax.lax.stop_gradient(h)
      for w in trainable[1]:
        h = _block(h, w)
      return jnp.sum(h * h)
    trainable = (None if k else embed, blocks[k:])
    return _xla_flops(jax.grad(loss), trainable, (embed, blocks[:k]), patches)

  costs = [grad_cost(k) for k in range(3)]
  # Unfrozen: embedding 2x (no pixel gradient), every block 3x.
  assert costs[0] == pytest.approx(2 * embed_fwd + 3 * _L * block, rel=0.03)
  # Freezing one more block saves its backward (2x forward) ...
  assert costs[1] - costs[2] == pytest.approx(2 * block, rel=0.02)
  # ... and the first freeze also saves the embedding's weight gradient and the next block's QKV
  # input gradient. Without the QKV term the prediction would be ~10% off here.
  assert costs[0] - costs[1] == pytest.approx(2 * block + embed_fwd + qkv, rel=0.02)
