"""AdamW with warmup + cosine (+ LayerLock mini-warmups), decay mask and global-norm clipping.

The optimizer only ever sees the *trainable* parameter tree (layerlock_jax/state.py): frozen
parameters get no update, no weight decay and no moment state, by construction rather than by
masking, and gradient norms / clipping cover the trainable parameters only.
"""
import jax
import optax


def decay_mask(params):
  """Weight decay on dense/conv kernels only: not on biases, norms, position tables, mask tokens.

  Decided by leaf name, not rank: stacked layers make biases 2-D, so rank-based rules are wrong.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(opt_cfg, learning_rate_fn) -> optax.GradientTransformation:
  parts = []
  if opt_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip))
  parts.append(optax.adamw(learning_rate_fn, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                           weight_decay=opt_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
