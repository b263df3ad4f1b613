"""Model-independent representation analysis: features in, numbers out.

These are the similarity, spectrum and collapse diagnostics of the blockwise-SSL paper's evaluation
suite (arXiv 2601.09040): linear and RBF CKA between blocks, effective rank by
spectral entropy, mean pairwise token cosine similarity, plus a collapse summary used to monitor
LayerLock / latent-prediction runs (latent targets can collapse, pixel targets cannot).

Everything here runs on the host in float64 numpy. The inputs are modest (thousands of clips, at
most ~1k channels), the work is a handful of matrix products and one SVD, and float32 is not
enough for some of it: HSIC is a difference of large, nearly equal sums, and spectral entropy is
sensitive to the tiny singular values that float32 rounding invents for rank-deficient features.
JAX arrays are accepted and converted with `np.asarray`.
"""
from typing import Any

import numpy as np

# A singular value below max(s) * max(N, D) * eps is treated as exactly zero. This is the same
# tolerance `np.linalg.matrix_rank` uses: it is the size of the rounding error an SVD of an exactly
# rank-deficient matrix leaves behind, so zeroing below it makes "rank r" really come out as r.
_EPS = np.finfo(np.float64).eps


def _as_f64(x: Any, ndim: int | None = None, name: str = "x") -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if ndim is not None and arr.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dims, got shape {arr.shape}")
  return arr


def mean_pool(tokens: Any) -> np.ndarray:
  """[N, ..., D] tokens -> [N, D] clip features, averaging every axis between N and D.

  This is the pooling of the blockwise paper's linear probe and retrieval metrics (mean over all
  tokens of a clip). [N, D] input is returned unchanged (as float64), so callers can pass either.
  """
  arr = _as_f64(tokens)
  if arr.ndim < 2:
    raise ValueError(f"expected [N, ..., D], got shape {arr.shape}")
  if arr.ndim == 2:
    return arr
  return arr.reshape(arr.shape[0], -1, arr.shape[-1]).mean(axis=1)


# ------------------------------------------------------------------------------------------------
# CKA (Kornblith et al. 2019): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with centred Gram matrices.
# The biased HSIC estimator is used (as in the original paper and the blockwise code); its 1/(N-1)^2
# factor cancels in the ratio, so it is dropped.
# ------------------------------------------------------------------------------------------------


def _centre_gram(k: np.ndarray) -> np.ndarray:
  """H K H with H = I - 11^T/N, done by subtracting row/column means instead of two N^3 products."""
  return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
  kc, lc = _centre_gram(k), _centre_gram(l)
  # tr(Kc Lc) = sum(Kc * Lc) because both are symmetric.
  hsic_kl = np.sum(kc * lc)
  denom = np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))
  # A constant representation has a zero centred Gram matrix: CKA is 0/0. NaN says "undefined"
  # instead of a number that could be mistaken for "dissimilar".
  return float(hsic_kl / denom) if denom > 0 else float("nan")


def _check_pair(x, y):
  x, y = _as_f64(x, 2, "x"), _as_f64(y, 2, "y")
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x and y need the same number of examples, got {x.shape} and {y.shape}")
  return x, y


def linear_cka(x: Any, y: Any) -> float:
  """Linear CKA between x [N, D1] and y [N, D2] (rows are the same N examples).

  In [0, 1]; 1 iff the centred representations are equal up to an orthogonal transform and an
  isotropic scaling. With centred X, Y: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). That
  feature-space form costs O(N D1 D2) and is used when the widths are below N; otherwise the Gram
  form (O(N^2 D)) is cheaper. Both compute the same quantity. Returns NaN if either input is
  constant.
  """
  x, y = _check_pair(x, y)
  n, d1 = x.shape
  d2 = y.shape[1]
  xc = x - x.mean(axis=0)
  yc = y - y.mean(axis=0)
  if d1 * d2 + d1 * d1 + d2 * d2 <= n * (d1 + d2):
    cross = np.sum((yc.T @ xc) ** 2)
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else float("nan")
  return _cka_from_grams(xc @ xc.T, yc @ yc.T)


def _rbf_gram(x: np.ndarray, sigma_scale: float) -> np.ndarray:
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
  np.fill_diagonal(d2, 0.0)
  # Median heuristic: the bandwidth is the median distance between *distinct* examples (the
  # diagonal zeros are left out, otherwise they drag the median down for small N). Tying sigma to
  # the data's own distances makes RBF CKA invariant to isotropic scaling, like linear CKA.
  off_diag = d2[~np.eye(len(x), dtype=bool)]
  med = np.median(np.sqrt(off_diag)) if off_diag.size else 0.0
  if med <= 0:
    # Every pair coincides (or N == 1): any bandwidth gives an all-ones Gram, i.e. no structure.
    return np.ones_like(d2)
  sigma = sigma_scale * med
  return np.exp(-d2 / (2.0 * sigma * sigma))


def rbf_cka(x: Any, y: Any, sigma_scale: float = 1.0) -> float:
  """RBF-kernel CKA between x [N, D1] and y [N, D2].

  k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) with sigma = sigma_scale * median pairwise distance,
  computed separately for x and y (the blockwise paper's "median heuristic"). Sensitive to local
  neighbourhood structure, which linear CKA (dominated by the top principal directions) is not.
  O(N^2) memory. Returns NaN if either input is constant.
  """
  x, y = _check_pair(x, y)
  if sigma_scale <= 0:
    raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
  return _cka_from_grams(_rbf_gram(x, sigma_scale), _rbf_gram(y, sigma_scale))


# ------------------------------------------------------------------------------------------------
# Spectrum and token geometry.
# ------------------------------------------------------------------------------------------------


def _singular_values(features: np.ndarray) -> np.ndarray:
  xc = features - features.mean(axis=0)
  s = np.linalg.svd(xc, compute_uv=False)
  if s.size == 0 or s[0] == 0:
    return np.zeros(0)
  s = s[s > s[0] * max(xc.shape) * _EPS]
  return s


def effective_rank(features: Any) -> float:
  """Effective rank (Roy & Vetterli 2007) of centred features [N, D].

  exp(H(p)) with p_i = s_i / sum_j s_j over the singular values s of the centred matrix. It equals r
  for r equal non-zero singular values and interpolates smoothly in between, so it measures how
  many directions the representation actually spreads over. Singular values at rounding-error level
  are treated as zero (see _EPS). Constant features have no spread at all: 0 is returned.
  """
  s = _singular_values(_as_f64(features, 2, "features"))
  if s.size == 0:
    return 0.0
  p = s / s.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def _layer_norm(tokens: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  mu = tokens.mean(axis=-1, keepdims=True)
  var = tokens.var(axis=-1, keepdims=True)
  return (tokens - mu) / np.sqrt(var + eps)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  # A zero vector stays zero (cosine 0 with everything) rather than becoming NaN.
  return x / np.where(norm > 0, norm, 1.0)


def token_cosine_similarity(tokens: Any) -> float:
  """Mean off-diagonal cosine similarity between the tokens of a clip, averaged over clips.

  tokens: [N, T, D] (or [N, ..., D]; the middle axes are flattened into T tokens, T >= 2). Each
  token is LayerNormed over D without affine parameters, then L2-normalised; for every clip the
  mean of cos(z_i, z_j) over i != j is taken, and the clip values are averaged (the blockwise
  paper's "Cos. Patch Similarity"). The LayerNorm removes the per-token offset and scale that ViT
  residual streams carry, so the number reflects token *content*; values near 1 mean the tokens of
  a clip have mixed into one. A token with zero variance over D maps to the zero vector and
  contributes 0.

  Uses sum_{i != j} z_i.z_j = ||sum_i z_i||^2 - sum_i ||z_i||^2, so it is O(N T D), never O(T^2).
  """
  arr = _as_f64(tokens)
  if arr.ndim < 3:
    raise ValueError(f"expected [N, T, D] tokens, got shape {arr.shape}")
  arr = arr.reshape(arr.shape[0], -1, arr.shape[-1])
  t = arr.shape[1]
  if t < 2:
    raise ValueError("need at least 2 tokens per clip")
  z = _l2_normalise(_layer_norm(arr))
  total = np.sum(np.sum(z, axis=1) ** 2, axis=-1)  # [N]
  diag = np.sum(z * z, axis=(1, 2))  # [N]
  return float(np.mean((total - diag) / (t * (t - 1))))


def _normalised_std(features: np.ndarray) -> float:
  """SimSiam's collapse monitor: sqrt(D) * mean per-dim std of L2-normalised features.

  Chen & He (2021) show that for unit vectors spread isotropically the per-dim std is 1/sqrt(D),
  and that it drops to 0 under collapse; multiplying by sqrt(D) puts healthy features near 1 at any
  width and makes the number independent of the feature scale.
  """
  z = _l2_normalise(features)
  return float(np.sqrt(features.shape[1]) * z.std(axis=0).mean())


def collapse_statistics(tokens_or_features: Any, *, std_threshold: float = 0.05,
                        min_effective_rank: float = 2.0) -> dict[str, Any]:
  """Collapse diagnostics for clip features [N, D] or tokens [N, ..., D] (mean-pooled for clips).

  Returns a dict with:
    pooled_std: mean over dims of the std over clips of the pooled features (raw scale).
    pooled_normalized_std: the same on L2-normalised features, times sqrt(D) (~1 when healthy).
    effective_rank, rank_fraction: effective rank of the pooled features and its ratio to the
      largest rank centred [N, D] features can have, min(N - 1, D) (= D whenever N > D).
    token_std, token_normalized_std, token_cosine_similarity: the token-level counterparts (only
      for token input; token std pools all N*T tokens; the cosine is NaN for one token per clip).
    collapsed: bool, see below.

  Rule: collapsed = pooled_normalized_std < std_threshold  or  effective_rank < min_effective_rank.
  The two clauses catch the two known failure modes, both judged on the pooled features the probes
  consume:
    * complete collapse (every clip maps to ~one point, possibly plus tiny isotropic noise, which
      would fool a rank test): the normalised std is scale-free and, by Jensen, at most
      sqrt(1 - mean pairwise cosine), so 0.05 flags sets whose clip features all lie within ~3
      degrees of each other (mean cosine > 0.9975); trained ViT features sit far from that.
    * dimensional collapse onto a line (e.g. f = a_i * v with varying a_i, whose normalised std is
      not small): an effective rank below 2 means less than two effective directions.
  The thresholds are deliberately conservative, to flag only true collapse; a healthy but
  anisotropic representation can have a small rank_fraction, so no fraction threshold is used.
  """
  arr = _as_f64(tokens_or_features)
  if arr.ndim < 2 or arr.shape[0] < 2:
    raise ValueError(f"need [N >= 2, ..., D] input, got shape {arr.shape}")
  pooled = mean_pool(arr)
  n, d = pooled.shape
  eff = effective_rank(pooled)
  stats: dict[str, Any] = {
      "pooled_std": float(pooled.std(axis=0).mean()),
      "pooled_normalized_std": _normalised_std(pooled),
      "effective_rank": eff,
      "rank_fraction": eff / min(n - 1, d),
  }
  if arr.ndim > 2:
    flat = arr.reshape(-1, d)
    stats["token_std"] = float(flat.std(axis=0).mean())
    stats["token_normalized_std"] = _normalised_std(flat)
    # Undefined with a single token per clip (no pairs).
    stats["token_cosine_similarity"] = (token_cosine_similarity(arr) if flat.shape[0] > n
                                        else float("nan"))
  stats["collapsed"] = bool(stats["pooled_normalized_std"] < std_threshold
                            or eff < min_effective_rank)
  return stats
