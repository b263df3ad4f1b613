"""Tests for layerlock_jax.evaluation.probes.

References: sklearn's LogisticRegression / NearestNeighbors / average_precision_score, retrieval
values computed by hand, binomial chance levels, and structural invariants of the readout.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from layerlock_jax.evaluation.analysis import mean_pool
from layerlock_jax.evaluation import probes


def _gaussian_classes(rng, n, means, noise=1.0):
  y = rng.integers(0, len(means), n)
  return means[y] + noise * rng.normal(size=(n, means.shape[1])), y


# ------------------------------------------------------------------------------------------------
# Linear probe.
# ------------------------------------------------------------------------------------------------


# The linear-probe tests share one shape (N=400, D=16, 4 classes) so L-BFGS compiles once.
N, D, C = 400, 16, 4


def test_linear_probe_separable_classes_reach_100_percent():
  rng = np.random.default_rng(0)
  means = 10.0 * rng.normal(size=(C, D))
  xtr, ytr = _gaussian_classes(rng, N, means)
  xte, yte = _gaussian_classes(rng, N, means)
  out = probes.linear_probe(xtr, ytr, xte, yte, C, seed=0)
  assert out["accuracy"] == 1.0 and out["train_accuracy"] == 1.0


def test_linear_probe_with_random_labels_is_at_chance():
  rng = np.random.default_rng(1)
  xtr, xte = rng.normal(size=(N, D)), rng.normal(size=(2000, D))
  ytr, yte = rng.integers(0, C, N), rng.integers(0, C, 2000)
  out = probes.linear_probe(xtr, ytr, xte, yte, C, seed=0)
  # Test labels are independent of everything the probe saw: accuracy ~ Binomial(2000, 1/4)/2000,
  # std 0.0097; 0.05 is a 5-sigma band.
  assert abs(out["accuracy"] - 0.25) < 0.05
  assert out["train_accuracy"] > 0.3  # it did fit (memorise) the training labels somewhat


def test_linear_probe_matches_sklearn_logistic_regression():
  rng = np.random.default_rng(2)
  means = 0.6 * rng.normal(size=(C, D))
  xtr, ytr = _gaussian_classes(rng, N, means)
  xte, yte = _gaussian_classes(rng, 2000, means)
  scale = rng.uniform(0.1, 10, size=D)  # badly scaled: standardisation must undo it
  xtr, xte = xtr * scale + 5.0, xte * scale + 5.0
  wd = 1e-2
  out = probes.linear_probe(xtr, ytr, xte, yte, C, seed=0, weight_decay=wd)

  scaler = StandardScaler().fit(xtr)
  ztr, zte = scaler.transform(xtr), scaler.transform(xte)
  # sklearn minimises 0.5||W||^2 + C * sum(CE) = C*N * (mean CE + ||W||^2 / (2 C N)).
  ref = LogisticRegression(C=1.0 / (wd * N), tol=1e-10, max_iter=10000).fit(ztr, ytr)
  logp = log_softmax(ztr @ ref.coef_.T + ref.intercept_, axis=1)
  ref_objective = -logp[np.arange(N), ytr].mean() + 0.5 * wd * np.sum(ref.coef_ ** 2)
  assert out["train_loss"] == pytest.approx(ref_objective, rel=1e-4)  # same optimum (float32)
  assert out["train_accuracy"] == pytest.approx(ref.score(ztr, ytr), abs=0.005)
  assert out["accuracy"] == pytest.approx(ref.score(zte, yte), abs=0.005)
  assert 0.4 < out["accuracy"] < 0.95  # overlapping classes: the comparison is not trivial


def test_linear_probe_standardises_with_train_statistics():
  # Train: class c sits at +6 on dim c. Test: only class 1. With train statistics the test points
  # stay where class 1 was; standardising the test set by its own mean would centre them on the
  # origin, among all classes, and give ~chance.
  rng = np.random.default_rng(3)
  means = 6.0 * np.eye(C, D)
  xtr, ytr = _gaussian_classes(rng, N, means, noise=0.5)
  xte = means[1] + 0.5 * rng.normal(size=(100, D))
  assert probes.linear_probe(xtr, ytr, xte, np.ones(100, int), C, seed=0)["accuracy"] == 1.0


def test_linear_probe_is_deterministic_and_leaves_inputs_alone():
  rng = np.random.default_rng(4)
  means = 0.5 * rng.normal(size=(C, D))
  xtr, ytr = _gaussian_classes(rng, N, means)
  xte, yte = _gaussian_classes(rng, 60, means)
  xtr = xtr.astype(np.float32)  # so that a float32 JAX copy holds exactly the same numbers
  copies = [a.copy() for a in (xtr, ytr, xte, yte)]
  first = probes.linear_probe(xtr, ytr, xte, yte, C, seed=7)
  assert first == probes.linear_probe(xtr, ytr, xte, yte, C, seed=7)  # bit-identical
  assert first == probes.linear_probe(jnp.asarray(xtr), jnp.asarray(ytr), xte, yte, C, seed=7)
  for before, after in zip(copies, (xtr, ytr, xte, yte)):
    np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------------------------------------------
# kNN retrieval.
# ------------------------------------------------------------------------------------------------

# Five 2-D items at angles 0, 10, 30, 100, 120 degrees, labels 0, 1, 0, 1, 1. Norms vary wildly so
# that a Euclidean ranking would differ from the cosine one.
_ANGLES = np.deg2rad([0.0, 10.0, 30.0, 100.0, 120.0])
_NORMS = np.array([1.0, 50.0, 0.1, 3.0, 20.0])
_FEATS = _NORMS[:, None] * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
_LABELS = np.array([0, 1, 0, 1, 1])


def test_knn_hand_built_leave_one_out():
  # Rankings by angular distance, self removed (relevant = same label, marked *):
  #   q0: a1 a2* a3 a4  -> top1 no, top2 yes, AP = 1/2
  #   q1: a0 a2 a3* a4* -> top1 no, top2 no,  AP = (1/3 + 2/4) / 2 = 5/12
  #   q2: a1 a0* a3 a4  -> top1 no, top2 yes, AP = 1/2
  #   q3: a4* a2 a1* a0 -> top1 yes,          AP = (1 + 2/3) / 2 = 5/6
  #   q4: a3* a2 a1* a0 -> top1 yes,          AP = 5/6
  out = probes.knn_retrieval(_FEATS, _LABELS, ks=(1, 2, 5))
  assert out["top1"] == pytest.approx(2 / 5)
  assert out["top2"] == pytest.approx(4 / 5)
  assert out["top5"] == pytest.approx(1.0)
  assert out["mAP"] == pytest.approx((1 / 2 + 5 / 12 + 1 / 2 + 5 / 6 + 5 / 6) / 5)  # 37/60


def test_knn_hand_built_separate_gallery_keeps_identical_items():
  # The same items passed explicitly as a gallery: each query now retrieves itself first.
  #   q0: a0* a1 a2* ...     AP = (1 + 2/3) / 2 = 5/6
  #   q1: a1* a0 a2 a3* a4*  AP = (1 + 2/4 + 3/5) / 3 = 0.7
  #   q2: a2* a1 a0* ...     AP = 5/6
  #   q3: a3* a4* a2 a1* a0  AP = (1 + 1 + 3/4) / 3 = 11/12
  #   q4: a4* a3* a2 a1* a0  AP = 11/12
  out = probes.knn_retrieval(_FEATS, _LABELS, _FEATS, _LABELS, ks=(1,))
  assert out["top1"] == 1.0
  assert out["mAP"] == pytest.approx((5 / 6 + 0.7 + 5 / 6 + 11 / 12 + 11 / 12) / 5)


def test_knn_matches_sklearn_neighbours_and_average_precision():
  rng = np.random.default_rng(5)
  means = 1.5 * rng.normal(size=(4, 6))
  x, y = _gaussian_classes(rng, 90, means)
  ks = (1, 3, 10)
  out = probes.knn_retrieval(x, y, ks=ks, block_size=7)  # small blocks exercise the chunking

  nn_ = NearestNeighbors(n_neighbors=max(ks) + 1, metric="cosine").fit(x)
  _, idx = nn_.kneighbors(x)
  assert np.all(idx[:, 0] == np.arange(len(x)))  # continuous data: self is always nearest
  neighbours = idx[:, 1:]
  for k in ks:
    expected = np.mean([np.any(y[neighbours[i, :k]] == y[i]) for i in range(len(x))])
    assert out[f"top{k}"] == pytest.approx(expected)

  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  aps = []
  for i in range(len(x)):
    others = np.arange(len(x)) != i
    aps.append(average_precision_score(y[others] == y[i], xn[others] @ xn[i]))
  assert out["mAP"] == pytest.approx(np.mean(aps), rel=1e-10)


def test_knn_separable_is_perfect_and_random_labels_are_at_chance():
  rng = np.random.default_rng(6)
  means = 20.0 * rng.normal(size=(4, 8))
  x, y = _gaussian_classes(rng, 200, means)
  out = probes.knn_retrieval(x, y)
  assert out == {"top1": 1.0, "top5": 1.0, "mAP": pytest.approx(1.0)}

  x = rng.normal(size=(1000, 8))
  y = rng.integers(0, 4, 1000)
  out = probes.knn_retrieval(x, y)
  # Labels independent of features: hit@1 ~ 1/4 (std ~0.014), hit@5 ~ 1 - (3/4)^5 = 0.763,
  # and AP of a random ranking ~ the prevalence 1/4 (a little above, for few relevant items).
  assert abs(out["top1"] - 0.25) < 0.06
  assert abs(out["top5"] - (1 - 0.75 ** 5)) < 0.06
  assert abs(out["mAP"] - 0.25) < 0.03


def test_knn_leaves_inputs_alone():
  x, y = _FEATS.copy(), _LABELS.copy()
  probes.knn_retrieval(x, y)
  probes.knn_retrieval(x, y, x, y)
  np.testing.assert_array_equal(x, _FEATS)
  np.testing.assert_array_equal(y, _LABELS)


# ------------------------------------------------------------------------------------------------
# Attentive readout and probe.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_attentive_readout_shapes_init_and_token_symmetries():
  b, t, p, d = 3, 4, 5, 8
  model = probes.AttentiveReadout(num_classes=6, num_queries=2, width=64, num_heads=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(b, t, p, d)), jnp.float32)
  init = jax.jit(lambda k, a: model.init(k, a)["params"])  # eager init compiles op by op: slow
  apply = jax.jit(lambda prm, a: model.apply({"params": prm}, a))
  params = init(jax.random.key(1), x)
  assert params["queries"].shape == (2, 4, 16)
  assert params["temporal_embedding"].shape == (t, d)
  assert float(jnp.std(params["queries"])) == pytest.approx(0.02, rel=0.25)  # N(0, 0.02) init

  out = apply(params, x)
  assert out.shape == (b, 2, 6)
  # Cross-attention is a weighted sum over keys, so shuffling the tokens within a time step (which
  # share a temporal embedding) cannot change the result ...
  perm = np.random.default_rng(0).permutation(p)
  np.testing.assert_allclose(apply(params, x[:, :, perm]), out, atol=1e-5)
  # ... but swapping time steps moves tokens onto other temporal embeddings.
  swapped = apply(params, x[:, ::-1])
  assert float(jnp.max(jnp.abs(swapped - out))) > 1e-4
  # [B, S, D] input is treated as a single time step.
  params3 = init(jax.random.key(1), x[:, 0])
  assert params3["temporal_embedding"].shape == (1, d)
  assert apply(params3, x[:, 0]).shape == (b, 2, 6)


def _numpy_readout(params, x, num_heads):
  """AttentiveReadout written out the textbook way in float64 numpy: keys and values projected
  for every token, softmax(q K^T / sqrt(hd)) V, then the output projection, MLP and head."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, t, n, d = x.shape

  def layernorm(v, scale, bias):
    mu = v.mean(-1, keepdims=True)
    var = ((v - mu) ** 2).mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + 1e-6) * scale + bias

  v = layernorm(x.astype(np.float64), p["input_norm"]["scale"], p["input_norm"]["bias"])
  v = (v + p["temporal_embedding"][None, :, None]).reshape(b, t * n, d)
  keys = np.einsum("bsd,dhc->bshc", v, p["key"]["kernel"]) + p["key"]["bias"]
  values = np.einsum("bsd,dhc->bshc", v, p["value"]["kernel"]) + p["value"]["bias"]
  q = p["queries"]                                       # [Q, H, hd]
  logits = np.einsum("qhc,bshc->bhqs", q, keys) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  attended = np.einsum("bhqs,bshc->bqhc", w, values)
  out = np.einsum("bqhc,hcw->bqw", attended, p["attn_out"]["kernel"]) + p["attn_out"]["bias"]
  y = q.reshape(1, q.shape[0], -1) + out
  h = layernorm(y, p["mlp_norm"]["scale"], p["mlp_norm"]["bias"])
  h = h @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"]
  h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))  # tanh GELU
  y = y + h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]
  return y @ p["head"]["kernel"] + p["head"]["bias"]


def test_attentive_readout_equals_textbook_cross_attention():
  """The readout folds the key projection into the queries and pools before the value
  projection; the function must be the textbook one (keys and values of every token), with
  non-zero biases so that the bias terms of the fold are exercised."""
  b, t, n, d = 3, 2, 5, 12
  model = probes.AttentiveReadout(num_classes=4, num_queries=2, width=16, num_heads=4)
  x = np.random.default_rng(0).normal(size=(b, t, n, d)).astype(np.float32)
  params = jax.jit(lambda k, a: model.init(k, a)["params"])(jax.random.key(3), x)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)
  got = jax.jit(lambda prm, a: model.apply({"params": prm}, a))(params, x)
  np.testing.assert_allclose(np.asarray(got), _numpy_readout(params, x, 4), rtol=1e-4, atol=1e-4)
  # The same readout on tokens normalised beforehand (what the probe trains on): same parameters,
  # same function of the raw tokens.
  pre = probes.AttentiveReadout(num_classes=4, num_queries=2, width=16, num_heads=4,
                                prenormalized=True)
  x_hat = np.asarray(probes.layernorm_tokens(x))
  got = jax.jit(lambda prm, a: pre.apply({"params": prm}, a))(params, x_hat)
  np.testing.assert_allclose(np.asarray(got), _numpy_readout(params, x, 4), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="prenormalized"):
    probes.AttentiveReadout(num_classes=4, width=16, num_heads=4, input_norm=False,
                            prenormalized=True).init(jax.random.key(0), x_hat)


def _spike_task(rng, n, t=2, p=4, d=16, noise=0.3, amp=4.0):
  """Label = index of the token (of t*p) that carries a spike on channel 0.

  Tokens carry a fixed position code, as an encoder's output tokens do. The spike adds the same
  vector whichever token it lands on, and every clip holds exactly one, so the mean-pooled clip
  feature carries no information about the label: solving it requires attending to the spike.
  """
  pos = np.random.default_rng(123).normal(size=(t * p, d))
  x = pos + noise * rng.normal(size=(n, t * p, d))
  y = rng.integers(0, t * p, n)
  x[np.arange(n), y, 0] += amp
  return x.reshape(n, t, p, d).astype(np.float32), y


@pytest.mark.slow
def test_attentive_probe_solves_a_task_that_needs_attention():
  rng = np.random.default_rng(7)
  xtr, ytr = _spike_task(rng, 1024)
  xte, yte = _spike_task(rng, 256)
  copies = [a.copy() for a in (xtr, ytr, xte, yte)]
  kwargs = dict(seed=0, steps=400, batch_size=32, lr=1e-2, width=32, num_heads=4)
  first = probes.attentive_probe(xtr, ytr, xte, yte, 8, **kwargs)
  assert first["accuracy"] >= 0.9
  second = probes.attentive_probe(xtr, ytr, xte, yte, 8, **kwargs)
  assert first == second  # deterministic from the seed, bit for bit
  # A readout with more outputs than the task has classes (tasks of several class counts share
  # one program) is the same classifier over the task's classes: it still solves the task, and
  # predicts only real classes (accuracy counts exact label matches).
  padded = probes.attentive_probe(xtr, ytr, xte, yte, 8, logit_classes=13, **kwargs)
  assert padded["accuracy"] >= 0.9 and padded["train_accuracy"] >= 0.9
  assert np.isfinite(padded["train_loss"]) and padded["train_loss"] < 0.5
  with pytest.raises(ValueError, match="logit_classes"):
    probes.attentive_probe(xtr, ytr, xte, yte, 8, logit_classes=4, **kwargs)
  for before, after in zip(copies, (xtr, ytr, xte, yte)):
    np.testing.assert_array_equal(before, after)
  # Sanity check of the task itself: mean pooling + linear probe stays near chance (1/8; 256
  # test clips give std ~0.02).
  linear = probes.linear_probe(mean_pool(xtr), ytr, mean_pool(xte), yte, 8, seed=0)
  assert linear["accuracy"] < 0.125 + 0.1


def test_attentive_probes_train_each_task_as_it_would_train_alone():
  """Several labellings of the same tokens trained side by side: each task gets the readout it
  gets alone (same initialisation, same minibatches), whatever the other tasks are."""
  rng = np.random.default_rng(3)
  xtr, ytr = _spike_task(rng, 256)
  xte, yte = _spike_task(rng, 128)
  # A second task on the same clips with 3 classes (a coarsening of the first one), and a third
  # with shuffled labels.
  tasks = {"spike": (ytr, yte, 8), "coarse": (ytr % 3, yte % 3, 3),
           "shuffled": (rng.permutation(ytr), rng.permutation(yte), 8)}
  kwargs = dict(seed=1, steps=60, batch_size=32, lr=1e-2, width=32, num_heads=4)
  together = probes.attentive_probes(xtr, xte, tasks, **kwargs)
  assert list(together) == list(tasks)
  for name, (a, b, classes) in tasks.items():
    alone = probes.attentive_probe(xtr, a, xte, b, classes, logit_classes=8, **kwargs)
    assert together[name]["accuracy"] == alone["accuracy"], name
    assert together[name]["train_accuracy"] == alone["train_accuracy"], name
    np.testing.assert_allclose(together[name]["train_loss"], alone["train_loss"], rtol=1e-4)
  assert together["spike"]["train_loss"] < together["shuffled"]["train_loss"]
  with pytest.raises(ValueError, match="coarse: train labels"):
    probes.attentive_probes(xtr, xte, {"coarse": (ytr, yte, 3)}, **kwargs)
  with pytest.raises(ValueError, match="at least one task"):
    probes.attentive_probes(xtr, xte, {}, **kwargs)


def test_standardize_tokens_matches_sklearn_standard_scaler_fitted_on_train_tokens():
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  train = rng.normal(2.0, 5.0, size=(20, 2, 3, 6)).astype(np.float32)
  test = rng.normal(-1.0, 1.0, size=(7, 2, 3, 6)).astype(np.float32)
  train[..., 4] = 1.5  # a constant dimension: centred, not divided by zero
  scaler = StandardScaler().fit(train.reshape(-1, 6))
  a, b = probes.standardize_tokens(train, test)
  np.testing.assert_allclose(a.reshape(-1, 6), scaler.transform(train.reshape(-1, 6)), atol=1e-5)
  np.testing.assert_allclose(b.reshape(-1, 6), scaler.transform(test.reshape(-1, 6)), atol=1e-5)


@pytest.mark.slow
def test_standardized_attentive_probe_ignores_per_dimension_affine_changes_of_the_features():
  rng = np.random.default_rng(7)
  xtr, ytr = _spike_task(rng, 512)
  xte, yte = _spike_task(rng, 128)
  kwargs = dict(seed=0, steps=200, batch_size=32, lr=1e-2, width=32, num_heads=4,
                token_norm="standardize")
  plain = probes.attentive_probe(xtr, ytr, xte, yte, 8, **kwargs)
  assert plain["accuracy"] >= 0.8
  # Each feature dimension rescaled and shifted (as a block's output can be): the probe sees the
  # same standardised tokens up to rounding, so it reaches the same accuracy.
  scale = np.exp(rng.normal(size=16)).astype(np.float32) * 10
  shift = rng.normal(size=16).astype(np.float32) * 100
  moved = probes.attentive_probe(xtr * scale + shift, ytr, xte * scale + shift, yte, 8, **kwargs)
  assert abs(moved["accuracy"] - plain["accuracy"]) <= 2 / len(yte)
  with pytest.raises(ValueError, match="token_norm"):
    probes.attentive_probe(xtr, ytr, xte, yte, 8, **{**kwargs, "token_norm": "batchnorm"})


@pytest.mark.parametrize("depth,block", [(6, 4), (12, 10), (24, 21), (40, 37), (2, 1), (1, 1)])
def test_readout_block_follows_the_4ds_095_depth_rule(depth, block):
  from layerlock_jax.evaluation import depthwise  # pylint: disable=g-import-not-at-top
  # 4DS reads list_of_outputs[int(0.95 * depth) - 1], the list starting at the embedding (block 0).
  assert depthwise.readout_block(depth) == block


def test_attentive_probe_on_tokens_standardised_by_the_caller_equals_the_standardize_norm():
  # depthwise_analysis standardises a block's tokens once and probes every task with
  # token_norm="given": the same probe as token_norm="standardize" on the raw tokens.
  rng = np.random.default_rng(11)
  xtr, ytr = _spike_task(rng, 64)
  xte, yte = _spike_task(rng, 32)
  xtr, xte = xtr * 3.0 + 1.0, xte * 3.0 + 1.0
  kwargs = dict(seed=0, steps=5, batch_size=16, width=16, num_heads=2)
  inside = probes.attentive_probe(xtr, ytr, xte, yte, 8, token_norm="standardize", **kwargs)
  a, b = probes.standardize_tokens(xtr, xte)
  outside = probes.attentive_probe(a, ytr, b, yte, 8, token_norm="given", **kwargs)
  assert inside == outside
  raw = probes.attentive_probe(xtr, ytr, xte, yte, 8, token_norm="given", **kwargs)
  assert raw["train_loss"] != inside["train_loss"]  # "given" really leaves the tokens as given
