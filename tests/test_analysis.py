"""Tests for layerlock_jax.evaluation.analysis against independent references.

References are written out here: HSIC with an explicit centring matrix H, scipy's pdist for the
median-heuristic bandwidth, full T x T cosine matrices, and closed-form values derived by hand.
"""
import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from layerlock_jax.evaluation import analysis


def _orthogonal(rng, d):
  q, r = np.linalg.qr(rng.normal(size=(d, d)))
  return q * np.sign(np.diag(r))


def _hsic_cka(k, l):
  """CKA from the textbook definition: tr(K H L H) normalised, with H = I - 11^T / n."""
  n = k.shape[0]
  h = np.eye(n) - np.ones((n, n)) / n
  hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2
  return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def _rbf_reference(x, scale):
  d = squareform(pdist(x))  # Euclidean distances between distinct rows, via scipy
  sigma = scale * np.median(pdist(x))
  return np.exp(-d ** 2 / (2 * sigma ** 2))


CKAS = [analysis.linear_cka, analysis.rbf_cka]


# ------------------------------------------------------------------------------------------------
# CKA.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cka", CKAS)
def test_cka_of_a_representation_with_itself_is_one(cka):
  x = np.random.default_rng(0).normal(size=(60, 12))
  assert cka(x, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("cka", CKAS)
def test_cka_invariant_to_orthogonal_maps_scaling_and_translation(cka):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 10))
  y = np.tanh(x @ rng.normal(size=(10, 7))) + 0.3 * rng.normal(size=(50, 7))
  base = cka(x, y)
  assert 0.2 < base < 0.99  # a non-trivial value, so invariance is not vacuous
  assert cka(x @ _orthogonal(rng, 10), y) == pytest.approx(base, rel=1e-10)
  assert cka(x, y @ _orthogonal(rng, 7)) == pytest.approx(base, rel=1e-10)
  assert cka(7.5 * x, y) == pytest.approx(base, rel=1e-10)
  assert cka(x, 0.01 * y + 3.0) == pytest.approx(base, rel=1e-10)
  assert cka(y, x) == pytest.approx(base, rel=1e-12)  # symmetric


@pytest.mark.parametrize("cka", CKAS)
def test_cka_of_independent_features_is_small(cka):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
  # For independent isotropic features, linear CKA ~ sqrt(D1 D2) / N = 0.02; RBF is similar.
  assert cka(x, y) < 0.1


@pytest.mark.parametrize("shape", [(40, 6, 9), (12, 30, 25)])  # narrow (feature form), wide (Gram)
def test_linear_cka_matches_explicit_hsic(shape):
  n, d1, d2 = shape
  rng = np.random.default_rng(3)
  x = rng.normal(size=(n, d1)) + 2.0
  y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))
  assert analysis.linear_cka(x, y) == pytest.approx(_hsic_cka(x @ x.T, y @ y.T), rel=1e-10)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_rbf_cka_matches_explicit_formula(scale):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(35, 5))
  y = np.sin(x @ rng.normal(size=(5, 4)))
  expected = _hsic_cka(_rbf_reference(x, scale), _rbf_reference(y, scale))
  assert analysis.rbf_cka(x, y, sigma_scale=scale) == pytest.approx(expected, rel=1e-10)


def test_rbf_cka_tends_to_linear_cka_for_wide_kernels():
  # exp(-d^2 / 2s^2) ~ 1 - d^2 / 2s^2, and double-centring -d^2/2 gives the centred linear Gram
  # matrix, so RBF CKA -> linear CKA as the bandwidth grows (Kornblith et al. 2019).
  rng = np.random.default_rng(5)
  x = rng.normal(size=(40, 6))
  y = np.tanh(x[:, :3]) + 0.2 * rng.normal(size=(40, 3))
  assert analysis.rbf_cka(x, y, sigma_scale=1e3) == pytest.approx(
      analysis.linear_cka(x, y), abs=1e-5)
  assert abs(analysis.rbf_cka(x, y) - analysis.linear_cka(x, y)) > 1e-3  # but differs at scale 1


@pytest.mark.parametrize("cka", CKAS)
def test_cka_is_nan_for_constant_features(cka):
  x = np.random.default_rng(6).normal(size=(10, 3))
  assert math.isnan(cka(x, np.ones((10, 4))))


def test_cka_rejects_mismatched_examples():
  with pytest.raises(ValueError):
    analysis.linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))


# ------------------------------------------------------------------------------------------------
# Effective rank.
# ------------------------------------------------------------------------------------------------


def _centred_orthonormal(rng, n, r):
  """n x r orthonormal columns, each orthogonal to the all-ones vector (so centring is a no-op)."""
  a = rng.normal(size=(n, r))
  q, _ = np.linalg.qr(a - a.mean(axis=0))
  return q


def test_effective_rank_of_isotropic_gaussian_is_close_to_dimension():
  x = np.random.default_rng(7).normal(size=(20000, 8))
  # Singular values are sqrt(N) (1 +- O(sqrt(D/N))); the entropy loses only second order.
  assert 8 * 0.995 < analysis.effective_rank(x) <= 8


@pytest.mark.parametrize("r", [1, 3, 7])
def test_effective_rank_of_equal_singular_values_is_exactly_r(r):
  rng = np.random.default_rng(8)
  u = _centred_orthonormal(rng, 50, r)
  v = _orthogonal(rng, 12)[:r]
  x = 4.0 * u @ v + rng.normal(size=(1, 12))  # constant offset: removed by centring
  assert analysis.effective_rank(x) == pytest.approx(r, abs=1e-9)


def test_effective_rank_of_one_dimensional_features_is_one():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(100, 1)) * rng.normal(size=(1, 16))  # a_i * v
  assert analysis.effective_rank(x) == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_hand_computed_spectrum():
  # Singular values (2, 1): p = (2/3, 1/3), erank = exp(-(2/3 ln 2/3 + 1/3 ln 1/3)) = 3 / 2^(2/3).
  rng = np.random.default_rng(10)
  x = _centred_orthonormal(rng, 30, 2) @ np.diag([2.0, 1.0]) @ _orthogonal(rng, 5)[:2]
  assert analysis.effective_rank(x) == pytest.approx(3 / 2 ** (2 / 3), rel=1e-10)
  assert analysis.effective_rank(1e-3 * x) == pytest.approx(3 / 2 ** (2 / 3), rel=1e-10)


def test_effective_rank_of_constant_features_is_zero():
  assert analysis.effective_rank(np.full((10, 4), 3.0)) == 0.0


# ------------------------------------------------------------------------------------------------
# Token cosine similarity and pooling.
# ------------------------------------------------------------------------------------------------


def _token_cos_reference(tokens):
  """Full T x T cosine matrix per clip after affine-free LayerNorm; mean of off-diagonal entries."""
  vals = []
  for clip in tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]):
    z = (clip - clip.mean(1, keepdims=True)) / np.sqrt(clip.var(1, keepdims=True) + 1e-6)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    c = z @ z.T
    t = len(c)
    vals.append(c[~np.eye(t, dtype=bool)].mean())
  return float(np.mean(vals))


def test_token_cosine_of_identical_tokens_is_one():
  rng = np.random.default_rng(11)
  tokens = np.repeat(rng.normal(size=(4, 1, 10)), 6, axis=1)  # every clip: one token, 6 copies
  assert analysis.token_cosine_similarity(tokens) == pytest.approx(1.0, abs=1e-12)


def test_token_cosine_hand_computed():
  # Clip 1: LayerNorm centres [1,2,3] -> [-1,0,1], [3,2,1] -> [1,0,-1], [1,3,2] -> [-1,1,0]; after
  # L2 normalisation the pairwise cosines are -1, 1/2, -1/2, so the clip's mean is -1/3.
  # Clip 2: three copies of one token, mean 1. Average over clips: (1 - 1/3) / 2 = 1/3.
  # Per-token shifts and positive scales must not matter (LayerNorm removes them).
  clip1 = np.array([[1.0, 2, 3], [3, 2, 1], [1, 3, 2]])
  clip1 = clip1 * np.array([[1.0], [10.0], [0.2]]) + np.array([[5.0], [-4.0], [0.0]])
  clip2 = np.array([[0.0, 4, 1]] * 3)
  # (LayerNorm's eps only rescales a token, which the L2 normalisation undoes: exact.)
  assert analysis.token_cosine_similarity(np.stack([clip1, clip2])) == pytest.approx(
      1 / 3, abs=1e-12)


def test_token_cosine_matches_full_pairwise_reference_and_accepts_4d():
  rng = np.random.default_rng(12)
  tokens = rng.normal(size=(3, 2, 5, 8)) + rng.normal(size=(3, 1, 1, 8))  # shared per-clip part
  ref = _token_cos_reference(tokens)
  assert 0.1 < ref < 0.9
  assert analysis.token_cosine_similarity(tokens) == pytest.approx(ref, rel=1e-10)
  assert analysis.token_cosine_similarity(tokens.reshape(3, 10, 8)) == pytest.approx(ref, rel=1e-10)


def test_mean_pool_averages_all_token_axes():
  tokens = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
  expected = np.stack([tokens[i].reshape(-1, 5).sum(0) / 12 for i in range(2)])
  np.testing.assert_allclose(analysis.mean_pool(tokens), expected)
  np.testing.assert_allclose(analysis.mean_pool(tokens[:, 0]), tokens[:, 0].mean(1))
  np.testing.assert_array_equal(analysis.mean_pool(expected), expected)


# ------------------------------------------------------------------------------------------------
# Collapse statistics.
# ------------------------------------------------------------------------------------------------


def test_collapse_statistics_of_isotropic_tokens():
  n, t, d = 500, 4, 16
  tokens = np.random.default_rng(13).normal(size=(n, t, d))
  s = analysis.collapse_statistics(tokens)
  assert not s["collapsed"]
  assert s["token_std"] == pytest.approx(1.0, abs=0.05)
  assert s["pooled_std"] == pytest.approx(1 / math.sqrt(t), abs=0.05)  # mean of t unit normals
  # Unit vectors spread isotropically have per-dim std 1/sqrt(D): normalised std ~ 1.
  assert s["pooled_normalized_std"] == pytest.approx(1.0, abs=0.05)
  assert s["token_normalized_std"] == pytest.approx(1.0, abs=0.05)
  assert s["rank_fraction"] > 0.95
  assert s["effective_rank"] == pytest.approx(s["rank_fraction"] * d)
  assert abs(s["token_cosine_similarity"]) < 0.05


def test_collapse_statistics_not_flagged_for_anisotropic_but_healthy_features():
  rng = np.random.default_rng(14)
  # A large shared mean direction (mean pairwise cosine ~0.8) plus spread in every direction.
  x = 2.0 * np.ones((300, 16)) / 4 + rng.normal(size=(300, 16)) / 4
  assert not analysis.collapse_statistics(x)["collapsed"]


@pytest.mark.parametrize("kind", ["constant", "constant_plus_tiny_noise", "rank1", "shared_tokens"])
def test_collapse_statistics_flags_collapse(kind):
  rng = np.random.default_rng(15)
  v = rng.normal(size=(1, 12))
  if kind == "constant":
    x = np.repeat(v, 100, axis=0)
  elif kind == "constant_plus_tiny_noise":  # full rank, but every clip is the same point
    x = v + 1e-4 * rng.normal(size=(100, 12))
  elif kind == "rank1":  # a_i * v: spread along one line only
    x = rng.normal(size=(100, 1)) * v
  else:  # tokens differ within a clip, but every clip is identical
    x = np.repeat(rng.normal(size=(1, 5, 12)), 100, axis=0)
  s = analysis.collapse_statistics(x)
  assert s["collapsed"]
  assert s["effective_rank"] < 2 or s["pooled_normalized_std"] < 0.05
  if kind == "rank1":
    assert s["effective_rank"] == pytest.approx(1.0, abs=1e-9)
    assert s["pooled_normalized_std"] > 0.05  # only the rank clause catches this one
  if kind == "constant_plus_tiny_noise":
    assert s["effective_rank"] > 10  # only the std clause catches this one
