"""The fused attention of `model.attention=auto`: the TPU kernel's numbers in Pallas' TPU interpret
mode on CPU against the XLA path and a float64 numpy reference, and what `auto` picks where."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import Mesh

from layerlock_jax.models import attention
from layerlock_jax.models import vit


def _numpy_attention(q, k, v):
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


def _qkv(shape, seed):
  keys = jax.random.split(jax.random.key(seed), 4)
  return [jax.random.normal(key, shape, jnp.float32) for key in keys]


# (B, S, H, Dh): encoder visible tokens (S = what masking keeps: not a multiple of the kernel's
# 128-token block, so padded keys must be masked out) and decoder full sequences (several blocks).
SHAPES = {"encoder_visible": (2, 40, 2, 64), "decoder_full": (1, 200, 2, 64)}


@pytest.mark.parametrize("name", list(SHAPES))
def test_tpu_kernel_matches_the_xla_path_forward_and_backward(name):
  q, k, v, w = _qkv(SHAPES[name], seed=len(name))

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

  kernel = lambda q, k, v: vit.attend(q, k, v, "pallas", "")
  xla = lambda q, k, v: vit.attend(q, k, v, "xla", "")
  with pltpu.force_tpu_interpret_mode():
    out = jax.jit(kernel)(q, k, v)
    grads = jax.jit(jax.grad(loss(kernel), argnums=(0, 1, 2)))(q, k, v)
  ref_out = xla(q, k, v)
  ref_grads = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=2e-5)
  for g, r in zip(grads, ref_grads):
    assert np.abs(np.asarray(r)).max() > 1e-3  # the reference gradient is not trivially zero
    np.testing.assert_allclose(g, r, atol=5e-5, rtol=5e-5)


def test_auto_is_xla_on_cpu_and_the_kernel_on_tpu_meshes(caplog):
  q = jax.ShapeDtypeStruct((2, 40, 2, 64), jnp.float32)  # choose() reads shape and dtype only
  wide = jax.ShapeDtypeStruct((2, 40, 2, 192), jnp.float32)  # head dim 192: not a multiple of 128
  assert attention.choose(q) == "xla"  # no mesh: the default backend, CPU here
  with jax.set_mesh(Mesh(np.array(jax.devices()[:2]), ("data",))):
    assert attention.choose(q) == "xla"
  from layerlock_jax.compile_targets import tpu as tpu_compile  # pylint: disable=g-import-not-at-top
  tpu = tpu_compile.compile_only_devices("v5e:2x2")
  with jax.set_mesh(Mesh(np.array(tpu), ("data",))):
    assert attention.choose(q) == "pallas_tpu"
    with caplog.at_level(logging.WARNING):
      assert attention.choose(wide) == "xla"
      assert attention.choose(wide) == "xla"
    lines = [r.getMessage() for r in caplog.records if "attention=auto" in r.getMessage()]
    assert len(lines) == 1 and "head dim 192" in lines[0]


def test_cudnn_refuses_float32_with_a_reason():
  assert "float32" in attention.cudnn_unsupported(jnp.zeros((1, 8, 2, 64), jnp.float32))
  assert attention.cudnn_unsupported(jnp.zeros((1, 8, 2, 64), jnp.bfloat16)) is None


def test_auto_on_cpu_is_the_xla_program_exactly():
  """CPU training numbers cannot move: under a CPU mesh `auto` lowers to the very program of
  attention=xla, forward and backward."""
  q, k, v, w = _qkv((2, 40, 2, 64), seed=3)

  def text(kind):
    loss = lambda q, k, v: jnp.sum(vit.attend(q, k, v, kind, "") * w)
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    with jax.set_mesh(Mesh(np.array(jax.devices()[:2]), ("data",))):
      return fn.lower(q, k, v).as_text()
  assert text("auto") == text("xla")
