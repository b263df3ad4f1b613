"""Frozen-feature probes: linear softmax regression, cosine kNN retrieval, 4DS attentive readout.

Features come in as arrays (the encoder is someone else's business), numbers come out. Two
protocols are covered:
  * blockwise SSL paper (arXiv 2601.09040, its evaluation code): mean-pooled tokens -> standardise -> multinomial logistic regression,
    and retrieval top-k / mAP on pooled embeddings with cosine similarity, excluding self-matches.
  * 4DS / LayerLock (arXiv 2412.15212, 2509.10156): an attentive readout (learned query cross-attending to all
    tokens) trained on top of frozen tokens; mean pooling would throw away *where* things are.

Every probe is deterministic given `seed`: initialisation comes from a JAX key, minibatch order
from a numpy Generator, and nothing else is random. Inputs are never modified (they are copied
before use).
"""
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def _labels(labels: Any, n: int, num_classes: int | None, name: str) -> np.ndarray:
  y = np.asarray(labels)
  if y.shape != (n,):
    raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
  y = y.astype(np.int64)
  if num_classes is not None and (y.min(initial=0) < 0 or y.max(initial=0) >= num_classes):
    raise ValueError(f"{name} must lie in [0, {num_classes})")
  return y


# ------------------------------------------------------------------------------------------------
# Linear probe.
# ------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_softmax_regression(x, y, key, weight_decay, *, num_classes, steps):
  """Full-batch L-BFGS on mean cross-entropy + weight_decay/2 * ||W||^2 (bias not penalised).

  The objective is convex, so a quasi-Newton method with a line search reaches the optimum in a
  few hundred iterations, with no learning rate to tune (this is also what sklearn's default
  LogisticRegression solver does). One compilation per (N, D, num_classes, steps).
  """
  d = x.shape[1]
  params = {"w": 0.01 * jax.random.normal(key, (d, num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)

  def step(carry, _):
    p, state, done = carry
    value, grad = value_and_grad(p, state=state)
    updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss_fn)
    new_p = optax.apply_updates(p, updates)
    # Once converged, L-BFGS's curvature pairs become 0/0; freeze instead of risking NaNs. Also
    # refuse a step that produced non-finite values (the previous iterate is then the answer).
    gnorm = optax.tree_utils.tree_norm(grad)
    ok = jnp.all(jnp.array([jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(new_p)]))
    done = done | (gnorm < 1e-6) | ~ok
    keep = lambda old, new: jnp.where(done, old, new)
    p = jax.tree.map(keep, p, new_p)
    state = jax.tree.map(keep, state, new_state)
    return (p, state, done), value

  (params, _, _), _ = jax.lax.scan(step, (params, opt.init(params), jnp.array(False)), None,
                                   length=steps)
  return params, loss_fn(params)


def linear_probe(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any,
                 num_classes: int, *, seed: int, steps: int = 300,
                 weight_decay: float = 1e-4) -> dict[str, float]:
  """Multinomial logistic regression on frozen features [N, D] (callers mean-pool tokens).

  Features are standardised with the TRAIN mean and std (zero-variance dims are only centred, as
  in sklearn's StandardScaler), so the probe sees test data exactly as a deployed classifier would.
  Trained full-batch with L-BFGS for at most `steps` iterations; `weight_decay` is the L2 strength
  on the weights (per-example-mean loss, so it matches sklearn's C = 1 / (weight_decay * N)).
  `seed` sets the (small random) initialisation; the optimum does not depend on it much, but the
  result is bit-for-bit reproducible for a fixed seed.

  Returns {"accuracy": test top-1, "train_accuracy": train top-1, "train_loss": final objective}.
  """
  xtr = np.array(train_feats, dtype=np.float64)
  xte = np.array(test_feats, dtype=np.float64)
  if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
    raise ValueError(f"expected [N, D] features, got {xtr.shape} and {xte.shape}")
  ytr = _labels(train_labels, xtr.shape[0], num_classes, "train_labels")
  yte = _labels(test_labels, xte.shape[0], num_classes, "test_labels")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  mean = xtr.mean(axis=0)
  std = xtr.std(axis=0)
  std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0))), std, 1.0)
  xtr = ((xtr - mean) / std).astype(np.float32)
  xte = ((xte - mean) / std).astype(np.float32)

  params, loss = _fit_softmax_regression(
      jnp.asarray(xtr), jnp.asarray(ytr, jnp.int32), jax.random.key(seed),
      jnp.float32(weight_decay), num_classes=num_classes, steps=steps)
  w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
  return {
      "accuracy": float(np.mean(np.argmax(xte @ w + b, axis=1) == yte)),
      "train_accuracy": float(np.mean(np.argmax(xtr @ w + b, axis=1) == ytr)),
      "train_loss": float(loss),
  }


# ------------------------------------------------------------------------------------------------
# Retrieval.
# ------------------------------------------------------------------------------------------------


def knn_retrieval(query_feats: Any, query_labels: Any, gallery_feats: Any = None,
                  gallery_labels: Any = None, ks: tuple[int, ...] = (1, 5),
                  block_size: int = 1024) -> dict[str, float]:
  """Cosine-similarity retrieval: hit@k for each k in `ks`, and mAP.

  Each query ranks the gallery by cosine similarity (descending; ties keep gallery order, as a
  stable sort does). An item is relevant iff it has the query's label.
    top{k} (hit@k): fraction of queries with at least one relevant item among the first k.
    mAP: mean over queries of AP = (1 / #relevant) * sum over relevant items of precision at that
      item's rank, i.e. the area under the query's precision-recall curve over the full ranking.
      Queries with no relevant item in the gallery are left out of the mean (AP is undefined);
      if no query has one, mAP is NaN.
  With gallery_feats=None the query set is its own gallery, leave-one-out: each query's own entry
  is removed from its ranking (neither retrieved nor counted as relevant), as the blockwise paper
  does. Features with zero norm get cosine 0 with everything.

  Works in blocks of `block_size` queries so memory stays O(block_size * gallery size).
  Returns {"top1": ..., "top5": ..., "mAP": ...} (keys follow `ks`).
  """
  def normalise(f):
    f = np.array(f, dtype=np.float64)
    if f.ndim != 2:
      raise ValueError(f"expected [N, D] features, got shape {f.shape}")
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)

  q = normalise(query_feats)
  ql = _labels(query_labels, q.shape[0], None, "query_labels")
  leave_one_out = gallery_feats is None
  if leave_one_out:
    if gallery_labels is not None:
      raise ValueError("gallery_labels given without gallery_feats")
    g, gl = q, ql
  else:
    g = normalise(gallery_feats)
    gl = _labels(gallery_labels, g.shape[0], None, "gallery_labels")
    if g.shape[1] != q.shape[1]:
      raise ValueError(f"feature widths differ: {q.shape} vs {g.shape}")
  if any(int(k) < 1 for k in ks):
    raise ValueError(f"ks must be positive, got {ks}")

  num_q, num_g = q.shape[0], g.shape[0]
  hits = {int(k): 0 for k in ks}
  ap_sum, ap_count = 0.0, 0
  precision_denominator = np.arange(1, num_g + 1, dtype=np.float64)
  for start in range(0, num_q, block_size):
    stop = min(start + block_size, num_q)
    sim = q[start:stop] @ g.T
    rel = ql[start:stop, None] == gl[None, :]
    if leave_one_out:
      rows = np.arange(stop - start)
      sim[rows, start + rows] = -np.inf  # ranks last ...
      rel[rows, start + rows] = False  # ... and never counts, so it is effectively removed
    order = np.argsort(-sim, axis=1, kind="stable")
    rel_sorted = np.take_along_axis(rel, order, axis=1)
    for k in hits:
      hits[k] += int(rel_sorted[:, :k].any(axis=1).sum())
    num_rel = rel_sorted.sum(axis=1)
    precision = np.cumsum(rel_sorted, axis=1) / precision_denominator
    ap = (precision * rel_sorted).sum(axis=1) / np.maximum(num_rel, 1)
    ap_sum += float(ap[num_rel > 0].sum())
    ap_count += int((num_rel > 0).sum())
  out = {f"top{k}": hits[k] / num_q for k in hits}
  out["mAP"] = ap_sum / ap_count if ap_count else float("nan")
  return out


# ------------------------------------------------------------------------------------------------
# Attentive readout (4DS AttentionReadout, classification variant).
# ------------------------------------------------------------------------------------------------


class _HeadProjection(nn.Module):
  """The kernel [D, H, hd] and bias [H, hd] of a per-head projection, returned, not applied:
  nn.DenseGeneral((H, hd))'s parameters, with its names and initialisation (LeCun normal over the
  D inputs, zero bias)."""
  heads: int
  head_dim: int

  @nn.compact
  def __call__(self, in_dim: int) -> tuple[jax.Array, jax.Array]:
    shape = (in_dim, self.heads, self.head_dim)
    kernel = self.param(
        "kernel", lambda key: nn.initializers.lecun_normal()(
            key, (in_dim, self.heads * self.head_dim)).reshape(shape))
    bias = self.param("bias", nn.initializers.zeros, (self.heads, self.head_dim))
    return kernel, bias


def layernorm_tokens(tokens, eps: float = 1e-6):
  """LayerNorm over the last axis without scale and bias (nn.LayerNorm's normalisation)."""
  mean = tokens.mean(-1, keepdims=True)
  centred = tokens - mean
  return centred / jnp.sqrt((centred * centred).mean(-1, keepdims=True) + eps)


class _LayerNormAffine(nn.Module):
  """nn.LayerNorm's scale [D] and bias [D] (names and initialisation), returned, not applied."""

  @nn.compact
  def __call__(self, dim: int) -> tuple[jax.Array, jax.Array]:
    return (self.param("scale", nn.initializers.ones, (dim,)),
            self.param("bias", nn.initializers.zeros, (dim,)))


class AttentiveReadout(nn.Module):
  """Learned-query cross-attention readout over frozen tokens, as in 4DS / V-JEPA evaluation.

  Input [B, T, P, D] (T time steps of P tokens) or [B, S, D] (treated as T = 1). Steps:
    1. LayerNorm on the inputs (4DS's V-JEPA-matching mode): frozen features from different depths
       have very different scales; this makes one learning rate work for all of them.
    2. Add a learned temporal position embedding [T, D], broadcast over P, then flatten to T*P
       keys. The encoder's tokens already carry spatial position; the readout adds time so that
       temporal order survives the pooling.
    3. `num_queries` learned queries, init N(0, 0.02), attend to all tokens with single-layer
       multi-head cross-attention (K/V projections with bias, softmax over tokens, output Dense).
    4. V-JEPA-style block: residual onto the query, then x + MLP(LayerNorm(x)) with a 4x GELU MLP.
    5. Dense to `num_classes`.
  Output: [B, num_queries, num_classes] logits (one query for clip classification; more queries
  are the dense-prediction variant, e.g. one per output patch).
  """
  num_classes: int
  num_queries: int = 1
  width: int = 1024
  num_heads: int = 16
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  input_norm: bool = True  # step 1; False when the caller standardised the tokens already
  # True: the tokens were normalised by `layernorm_tokens` already (once for a whole probing set,
  # instead of at every training step); the readout applies only the LayerNorm's scale and bias.
  prenormalized: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
    if tokens.ndim == 3:
      tokens = tokens[:, None]
    if tokens.ndim != 4:
      raise ValueError(f"expected [B, T, P, D] or [B, S, D], got shape {tokens.shape}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} not divisible by num_heads {self.num_heads}")
    b, t, p, d = tokens.shape
    heads, head_dim = self.num_heads, self.width // self.num_heads

    if self.prenormalized and not self.input_norm:
      raise ValueError("prenormalized tokens need input_norm=True (its scale and bias)")
    if self.input_norm:  # nn.LayerNorm's parameters; the normalisation itself is applied below
      scale, shift = _LayerNormAffine(name="input_norm")(d)
      x = tokens if self.prenormalized else layernorm_tokens(tokens)
    else:
      scale, shift, x = None, jnp.zeros((d,), tokens.dtype), tokens
    time_embed = self.param("temporal_embedding", nn.initializers.normal(0.02), (t, d))
    x = x.reshape(b, t * p, d)
    # Every key and value reads z_s = x_s * scale + offset_t, with offset_t = shift + time_embed_t
    # the same for the P tokens of a time step. Both maps are linear in z, so the per-dimension
    # scale moves into the folded weights and the offset into a [T, H*Q] table: no [B, S, D]
    # array is formed beyond the normalised tokens themselves.
    offset = time_embed + shift                                               # [T, D]

    queries = self.param("queries", nn.initializers.normal(0.02),
                         (self.num_queries, heads, head_dim))
    key_kernel, key_bias = _HeadProjection(heads, head_dim, name="key")(d)
    value_kernel, value_bias = _HeadProjection(heads, head_dim, name="value")(d)
    # Keys K = z Wk + bk and values V = z Wv + bv are never formed. With a few queries it is
    # cheaper to fold Wk into the queries, q.K_s = z_s.(Wk q) + q.bk, and to pool the tokens before
    # the value projection, sum_s w_s V_s = (sum_s w_s z_s) Wv + (sum_s w_s) bv: the same function
    # at O(S D H Q) per clip instead of O(S D W), ~30x fewer FLOPs for one query at width 128.
    # The logits are one [B*S, D] x [D, H*Q] matmul and stay [B, S, H*Q] (softmax over axis 1):
    # as a 4-D einsum with S last, XLA:CPU ran this readout's training step slower (see
    # docs/evaluation.md).
    k = heads * self.num_queries
    folded = jnp.einsum("dhc,qhc->dhq", key_kernel, queries).reshape(d, k)
    per_step = offset @ folded + jnp.einsum("hc,qhc->hq", key_bias, queries).reshape(-1)
    token_weights = folded if scale is None else folded * scale[:, None]
    logits = (x.reshape(b * t * p, d) @ token_weights).reshape(b, t, p, k) + per_step[:, None]
    logits = logits.reshape(b, t * p, k) / math.sqrt(head_dim)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=1).astype(x.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    pooled = jnp.einsum("bsk,bsd->bkd", weights, x)
    if scale is not None:
      pooled = pooled * scale
    step_weights = weights.reshape(b, t, p, k).sum(axis=2)                   # [B, T, K]
    pooled = pooled + jnp.einsum("btk,td->bkd", step_weights, offset)
    pooled = pooled.reshape(b, heads, self.num_queries, d)
    attended = (jnp.einsum("bhqd,dhc->bqhc", pooled, value_kernel)
                + jnp.einsum("bhq,hc->bqhc",
                             step_weights.sum(1).reshape(b, heads, self.num_queries), value_bias))
    attended = nn.DenseGeneral(self.width, axis=(-2, -1), name="attn_out")(attended)

    y = queries.reshape(1, self.num_queries, self.width) + attended  # [B, Q, W]
    h = nn.LayerNorm(name="mlp_norm")(y)
    h = nn.Dense(self.mlp_ratio * self.width, name="mlp_in")(h)
    h = nn.Dense(self.width, name="mlp_out")(nn.gelu(h))
    y = y + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(self.num_classes, name="head")(y)


@functools.lru_cache(maxsize=16)
def _attentive_fns(logit_classes, num_queries, width, num_heads, lr, weight_decay, steps,
                   warmup_steps, input_norm=True):
  """Builds (init, optimizer, train step, predict), all jitted, once per hyper-parameter set,
  so repeated probes with the same shapes reuse the compiled functions.

  The readout has `logit_classes` outputs; a task with fewer classes passes `valid` (True for
  its classes), and the others' logits are -inf in the loss and the argmax: the same
  classifier over the task's classes, and one compiled program for tasks of any class count."""
  # With the 4DS LayerNorm, the caller normalises the tokens once (layernorm_tokens): the
  # readout's training steps then skip it.
  model = AttentiveReadout(num_classes=logit_classes, num_queries=num_queries, width=width,
                           num_heads=num_heads, input_norm=input_norm, prenormalized=input_norm)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(steps, warmup_steps + 1))
  # Decay matrices (kernels, queries, time embedding), not biases or LayerNorm scales.
  decay_mask = lambda params: jax.tree.map(lambda a: a.ndim >= 2, params)
  tx = optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)

  def logits_fn(params, x, valid):
    logits = model.apply({"params": params}, x).mean(axis=1)  # average over queries
    return jnp.where(valid, logits, -jnp.inf)

  def loss_fn(params, x, y, valid):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x, valid), y).mean()

  def train_one(params, opt_state, xs, ys, order, valid):
    # The whole training set stays on the device and every step runs inside one program (a scan
    # over the [steps, batch] minibatch indices): no per-step dispatch or host copy of a batch.
    def step(carry, idx):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, xs[idx], ys[idx], valid)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, losses

  # Several labellings of the same tokens (tasks) train side by side: vmapped over the task axis
  # of the labels and class masks, each task's readout starts from the same parameters and sees
  # the same minibatches as it would alone, while each minibatch of tokens is gathered once for
  # all of them and their small matmuls over it become one (docs/evaluation.md).
  train = jax.jit(jax.vmap(train_one, in_axes=(None, None, None, 0, None, 0)))
  predict = jax.jit(jax.vmap(lambda params, x, valid: jnp.argmax(logits_fn(params, x, valid), -1),
                             in_axes=(0, None, 0)))

  # Jitted: run eagerly, every random initialiser compiles separately (several seconds on CPU).
  init = jax.jit(lambda key, x: model.init(key, x)["params"])
  return init, tx, train, predict


# "given": the tokens as given, no LayerNorm (e.g. tokens already standardised by the caller).
TOKEN_NORMS = ("layernorm", "standardize", "given")


def standardize_tokens(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per feature dimension (last axis): subtract the mean and divide by the std of every TRAIN
  token, for train and test alike (zero-variance dimensions are only centred).

  Statistics accumulate in float64; the tokens are scaled in float32 in place of one copy each
  (a float64 copy of 512 clips x 128 tokens x 128 features costs ~1 s in page faults alone)."""
  flat = np.asarray(train, np.float32).reshape(-1, train.shape[-1])
  mean = flat.mean(0, dtype=np.float64)
  centred = flat - mean.astype(np.float32)
  std = np.sqrt(np.mean(np.square(centred), axis=0, dtype=np.float64))
  del centred
  inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0).astype(np.float32)
  mean32 = mean.astype(np.float32)

  def scale(x):
    out = np.subtract(x, mean32, dtype=np.float32)
    out *= inv
    return out

  return scale(train), scale(test)


def _batched_accuracy(predict, params, tokens, labels, batch_size, classes) -> np.ndarray:
  """Top-1 accuracy per task ([T] labels [T, N], class masks [T, C], parameters stacked over
  T) with fixed-size (zero-padded) batches so `predict` compiles once."""
  n = tokens.shape[0]
  correct = np.zeros(labels.shape[0], np.int64)
  for start in range(0, n, batch_size):
    chunk = tokens[start:start + batch_size]
    valid = chunk.shape[0]
    if valid < batch_size:
      pad = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
      chunk = np.concatenate([chunk, pad])
    pred = np.asarray(predict(params, jnp.asarray(chunk), classes))[:, :valid]
    correct += np.sum(pred == labels[:, start:start + valid], axis=1)
  return correct / n


def attentive_probe(train_tokens: Any, train_labels: Any, test_tokens: Any, test_labels: Any,
                    num_classes: int, **kwargs) -> dict[str, float]:
  """Trains an `AttentiveReadout` on frozen tokens and reports test top-1 accuracy: one task of
  `attentive_probes` (see there for the keyword arguments)."""
  return attentive_probes(train_tokens, test_tokens,
                          {"task": (train_labels, test_labels, num_classes)}, **kwargs)["task"]


def attentive_probes(train_tokens: Any, test_tokens: Any, tasks: dict[str, tuple[Any, Any, int]],
                     *, seed: int, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                     weight_decay: float = 0.05, width: int = 256, num_heads: int = 8,
                     num_queries: int = 1, warmup_steps: int | None = None,
                     eval_batch_size: int = 256, token_norm: str = "layernorm",
                     logit_classes: int | None = None) -> dict[str, dict[str, float]]:
  """Trains one `AttentiveReadout` per task on the same frozen tokens; test top-1 per task.

  tasks: name -> (train labels, test labels, num_classes). The readouts train side by side in
  one program; each one is the readout `attentive_probe` trains for its task alone (same
  initialisation from `seed`, same minibatches).

  Tokens: [N, T, P, D] or [N, S, D]. AdamW on minibatches of `batch_size` (epochs are reshuffled
  from numpy's Generator(seed); the last batch of an epoch is topped up from the next permutation
  so every step sees a full batch and the step compiles once), learning rate with linear warmup
  (default 10% of steps) and cosine decay to 0. Weight decay applies to matrices only. The 4DS
  depth readout is width 1024 / 16 heads; the smaller default suits small probing sets.

  token_norm: "layernorm" (4DS: a LayerNorm over each token's features, inside the readout) or
  "standardize" (each feature dimension standardised with the mean and std of all TRAIN tokens,
  no LayerNorm) or "given" (no normalisation: for tokens the caller standardised once for several
  probes). A per-token LayerNorm keeps a vector that every token of a clip shares; the
  per-dimension standardisation removes the dataset-wide mean instead and keeps the differences
  between a clip's tokens at their relative scale.

  logit_classes: outputs of the readout (default: the largest `num_classes` of the tasks); more
  lets tasks of other calls with more classes share one compiled program (the extra logits are
  masked).

  Returns, per task, {"accuracy": test top-1, "train_accuracy": train top-1, "train_loss": mean
  loss over the last 10% of steps}.
  """
  xtr = np.array(train_tokens, dtype=np.float32)
  xte = np.array(test_tokens, dtype=np.float32)
  if xtr.ndim not in (3, 4) or xtr.shape[1:] != xte.shape[1:]:
    raise ValueError(f"expected matching [N, T, P, D] / [N, S, D] tokens, got {xtr.shape}, "
                     f"{xte.shape}")
  if token_norm not in TOKEN_NORMS:
    raise ValueError(f"token_norm must be one of {TOKEN_NORMS}, got {token_norm!r}")
  if token_norm == "standardize":
    xtr, xte = standardize_tokens(xtr, xte)
  elif token_norm == "layernorm":  # the parameter-free part, once; the readout holds the affine
    normalise = jax.jit(layernorm_tokens)
    xtr, xte = np.asarray(normalise(xtr)), np.asarray(normalise(xte))
  if not tasks:
    raise ValueError("attentive_probes needs at least one task")
  names = list(tasks)
  ytr = np.stack([_labels(tasks[k][0], xtr.shape[0], tasks[k][2], f"{k}: train labels")
                  for k in names])
  yte = np.stack([_labels(tasks[k][1], xte.shape[0], tasks[k][2], f"{k}: test labels")
                  for k in names])
  num_classes = [int(tasks[k][2]) for k in names]
  if steps < 1 or batch_size < 1:
    raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
  n = xtr.shape[0]
  batch_size = min(batch_size, n)
  if warmup_steps is None:
    warmup_steps = steps // 10

  logit_classes = max(num_classes) if logit_classes is None else int(logit_classes)
  if logit_classes < max(num_classes):
    raise ValueError(f"logit_classes={logit_classes} < num_classes={max(num_classes)}")
  valid = jnp.arange(logit_classes)[None] < jnp.asarray(num_classes)[:, None]   # [T, C]
  init, tx, train, predict = _attentive_fns(
      logit_classes, num_queries, width, num_heads, float(lr), float(weight_decay), int(steps),
      int(warmup_steps), token_norm == "layernorm")
  params = init(jax.random.key(seed), jnp.asarray(xtr[:1]))
  opt_state = tx.init(params)

  rng = np.random.default_rng(seed)
  num_epochs = -(-steps * batch_size // n)
  order = np.concatenate([rng.permutation(n) for _ in range(num_epochs)])
  batches = order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)
  params, _, losses = train(params, opt_state, jnp.asarray(xtr), jnp.asarray(ytr, jnp.int32),
                            jnp.asarray(batches), valid)
  tail = max(1, steps // 10)
  train_loss = np.mean(np.asarray(losses)[:, -tail:], axis=1)
  eval_bs = min(eval_batch_size, max(n, xte.shape[0]))
  test_acc = _batched_accuracy(predict, params, xte, yte, eval_bs, valid)
  train_acc = _batched_accuracy(predict, params, xtr, ytr, eval_bs, valid)
  return {k: {"accuracy": float(test_acc[i]), "train_accuracy": float(train_acc[i]),
              "train_loss": float(train_loss[i])} for i, k in enumerate(names)}
