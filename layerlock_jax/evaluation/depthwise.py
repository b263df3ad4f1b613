"""Depth-wise analysis of a frozen encoder: what each block has learned, block by block.

For every encoder depth j (0 = patch embedding, j = output of block j) this computes the blockwise
paper's diagnostics (arXiv 2601.09040, and its released evaluation code) on held-out clips:
  * decodability: a linear probe on mean-pooled tokens per labelled task (fit on the train split,
    scored on the test split) and cosine kNN retrieval (top-1/5, mAP, leave-one-out on the test
    split);
  * similarity between depths: linear and RBF CKA matrices of the pooled test features;
  * token geometry and collapse: mean token cosine similarity, per-dimension std, effective rank
    (`analysis.collapse_statistics`), with its collapsed flag;
  * optionally the 4DS attentive readout on the tokens of chosen blocks.
The numbers come from `probes` and `analysis`; this module only decides which features go where
and lays the results out as one row per depth.

`evaluate_params` is the whole pipeline from a config and a parameter tree: data, features, table.
"""
import dataclasses
import time
from typing import Any, Sequence

import ml_collections
import numpy as np

from layerlock_jax.data import pipeline
from layerlock_jax.data import synthetic
from layerlock_jax.evaluation import analysis
from layerlock_jax.evaluation import features as features_lib
from layerlock_jax.evaluation import probes


# ------------------------------------------------------------------------------------------------
# Labelled evaluation data.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalData:
  """Probe-fitting (train split) and scoring (test split) clips with their labels."""
  source: str
  train_videos: np.ndarray
  train_labels: dict[str, np.ndarray]
  test_videos: np.ndarray
  test_labels: dict[str, np.ndarray]
  num_classes: dict[str, int]


def task_data_config(config, task_source: str | None = None) -> ml_collections.ConfigDict:
  """config.data with the source swapped (same frames and image size, so the encoder fits).

  This is how an encoder pretrained on Moving MNIST is probed on the gratings labels and vice
  versa: only the label source changes, the clip geometry must stay the model's.
  """
  data_cfg = ml_collections.ConfigDict(config.data.to_dict())
  if task_source:
    data_cfg.source = task_source
  return data_cfg


def load_eval_data(config, *, num_train: int, num_test: int, task_source: str | None = None,
                   data_seed: int | None = None, tasks: Sequence[str] | None = None) -> EvalData:
  """Clips and labels of both splits of `config.data` (or of `task_source`).

  The data seed defaults to config.seed: for the embedded sources the seed defines the dataset,
  so this probes the clips the model was pretrained on (train split) and held-out clips (test).
  Class counts come from the source's LABELS table; a source without one (file-backed) gets
  max label + 1. `tasks` keeps only these labels (default: all of the source's).
  """
  data_cfg = task_data_config(config, task_source)
  seed = config.seed if data_seed is None else data_seed
  train_videos, train_labels = pipeline.load_split_arrays(data_cfg, "train", num_train, seed)
  test_videos, test_labels = pipeline.load_split_arrays(data_cfg, "test", num_test, seed)
  if tasks is not None:
    unknown = sorted(set(tasks) - set(train_labels))
    if unknown:
      raise ValueError(f"unknown tasks {unknown} for source {data_cfg.source!r}; it has "
                       f"{sorted(train_labels)}")
    train_labels = {k: train_labels[k] for k in tasks}
    test_labels = {k: test_labels[k] for k in tasks}
  table = getattr(type(synthetic.make_source(data_cfg, "test", seed)), "LABELS", None) or {}
  num_classes = {name: int(table.get(name, max(train_labels[name].max(),
                                               test_labels[name].max()) + 1))
                 for name in train_labels}
  return EvalData(data_cfg.source, train_videos, train_labels, test_videos, test_labels,
                  num_classes)


# ------------------------------------------------------------------------------------------------
# The depth-wise table.
# ------------------------------------------------------------------------------------------------


def _chance(labels: np.ndarray) -> float:
  """Test accuracy of the best constant guess: the majority-class rate of the test labels.

  It is an upper bound for any predictor that ignores the features, hence the right "chance"
  line for classes that are only balanced in expectation.
  """
  return float(np.bincount(labels).max() / labels.size)


def cka_matrices(pooled: np.ndarray) -> dict[str, list[list[float]]]:
  """Linear and RBF CKA between every pair of depths of pooled features [L+1, N, D]."""
  n = pooled.shape[0]
  out = {}
  for name, fn in (("linear_cka", analysis.linear_cka), ("rbf_cka", analysis.rbf_cka)):
    mat = np.eye(n)
    for i in range(n):
      for j in range(i + 1, n):
        mat[i, j] = mat[j, i] = fn(pooled[i], pooled[j])
      # CKA of a representation with itself is 1 unless it is constant (then undefined).
      mat[i, i] = fn(pooled[i], pooled[i])
    out[name] = mat.tolist()
  return out


def depthwise_analysis(train: features_lib.Features, train_labels: dict[str, np.ndarray],
                       test: features_lib.Features, test_labels: dict[str, np.ndarray],
                       num_classes: dict[str, int], *, seed: int = 0,
                       probe_steps: int = 300, attentive_blocks: Sequence[int] = (),
                       attentive_kwargs: dict | None = None, cka: bool = True,
                       token_stat_clips: int | None = None,
                       attentive_norms: Sequence[str] = ("layernorm",)) -> dict[str, Any]:
  """The per-depth table of decodability, similarity and collapse statistics.

  train / test: features of the probe-fitting and scoring clips; tokens are used when present
  (test tokens for token-level statistics; train and test tokens of `attentive_blocks` for the
  attentive probe). Returns a JSON-able dict:
    blocks, block_names: the depths (0 = embedding).
    tasks[name]: num_classes, chance, linear / linear_train / knn_top1 / knn_top5 / knn_mAP
      (lists over depths), attentive ({block: accuracy}, tokens LayerNormed) and, when
      "standardize" is in `attentive_norms`, attentive_standardize (tokens standardised per
      feature dimension with train statistics; see probes.attentive_probe).
    linear_cka, rbf_cka: [L+1][L+1] matrices on the pooled test features.
    collapse: per-depth collapse_statistics (pooled statistics on all test clips, token-level
      ones on the first `token_stat_clips` clips whose tokens were extracted).
    rows: one dict per depth with the headline numbers of all of the above.
  """
  if train.depth != test.depth:
    raise ValueError(f"train and test features differ in depth: {train.depth} vs {test.depth}")
  depth = train.depth
  blocks = list(range(depth + 1))
  tasks: dict[str, dict[str, Any]] = {}
  for name, classes in num_classes.items():
    ytr, yte = np.asarray(train_labels[name]), np.asarray(test_labels[name])
    task = {"num_classes": int(classes), "chance": _chance(yte), "linear": [],
            "linear_train": [], "knn_top1": [], "knn_top5": [], "knn_mAP": []}
    task.update({attentive_key(norm): {} for norm in attentive_norms})
    for j in blocks:
      lin = probes.linear_probe(train.pooled[j], ytr, test.pooled[j], yte, classes, seed=seed,
                                steps=probe_steps)
      task["linear"].append(lin["accuracy"])
      task["linear_train"].append(lin["train_accuracy"])
      knn = probes.knn_retrieval(test.pooled[j], yte, ks=(1, 5))
      task["knn_top1"].append(knn["top1"])
      task["knn_top5"].append(knn["top5"])
      task["knn_mAP"].append(knn["mAP"])
    tasks[name] = task
  labels = {name: (train_labels[name], test_labels[name], classes)
            for name, classes in num_classes.items()}
  for j in attentive_blocks:
    if j not in train.tokens or j not in test.tokens:
      raise ValueError(f"attentive probe at block {j} needs train and test tokens of it")
    if any(len(train.tokens[j]) != len(y[0]) or len(test.tokens[j]) != len(y[1])
           for y in labels.values()):
      raise ValueError("attentive probe needs tokens of every train and test clip")
    for norm in attentive_norms:
      xtr, xte, probe_norm = train.tokens[j], test.tokens[j], norm
      if norm == "standardize":
        (xtr, xte), probe_norm = probes.standardize_tokens(xtr, xte), "given"
      # Every task's readout at once, trained side by side in one program.
      results = probes.attentive_probes(xtr, xte, labels, seed=seed, token_norm=probe_norm,
                                        logit_classes=max(num_classes.values()),
                                        **(attentive_kwargs or {}))
      for name, att in results.items():
        tasks[name][attentive_key(norm)][str(j)] = att["accuracy"]

  collapse = []
  for j in blocks:
    stats = analysis.collapse_statistics(test.pooled[j])
    tokens = test.tokens.get(j)
    if tokens is not None and token_stat_clips is not None:
      tokens = tokens[:token_stat_clips]
    if tokens is not None and len(tokens) >= 2:
      token_stats = analysis.collapse_statistics(tokens)
      stats.update({k: v for k, v in token_stats.items() if k.startswith("token_")})
    collapse.append(stats)

  result: dict[str, Any] = {"blocks": blocks, "block_names": features_lib.block_names(depth),
                            "num_train": train.num_clips, "num_test": test.num_clips,
                            "tasks": tasks, "collapse": collapse}
  if cka:
    result.update(cka_matrices(test.pooled))
  result["rows"] = _rows(result)
  return result


def attentive_key(token_norm: str) -> str:
  """Result key of the attentive probe with this token normalisation ("attentive" for the 4DS
  LayerNorm, so older results keep their meaning)."""
  return "attentive" if token_norm == "layernorm" else f"attentive_{token_norm}"


def readout_block(depth: int, fraction: float = 0.95) -> int:
  """The block (1-based) whose output a depth-`fraction` readout reads.

  The 4DS evaluation code indexes its list of block outputs with int(fraction * depth) - 1 over a
  list that starts at the embedding, so at 0.95 a 12-block encoder is read after block 10 and a
  6-block one after block 4, not at the last block. This reproduces that rule (at least block 1).
  """
  if depth < 1 or not 0.0 < fraction <= 1.0:
    raise ValueError(f"need depth >= 1 and fraction in (0, 1], got {depth}, {fraction}")
  return max(1, int(fraction * depth + 1e-9) - 1)


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
  """One flat row per depth: the table a reader (or a CSV) wants."""
  rows = []
  for j in result["blocks"]:
    row: dict[str, Any] = {"block": j, "name": result["block_names"][j]}
    linear = []
    for name, task in result["tasks"].items():
      row[f"linear/{name}"] = task["linear"][j]
      row[f"knn_top1/{name}"] = task["knn_top1"][j]
      row[f"knn_mAP/{name}"] = task["knn_mAP"][j]
      for key in (k for k in task if k.startswith("attentive")):
        if str(j) in task[key]:
          row[f"{key}/{name}"] = task[key][str(j)]
      linear.append(task["linear"][j])
    if linear:
      row["linear/mean"] = float(np.mean(linear))
    stats = result["collapse"][j]
    for key in ("effective_rank", "pooled_normalized_std", "pooled_std",
                "token_cosine_similarity", "token_normalized_std", "collapsed"):
      if key in stats:
        row[key] = stats[key]
    if "linear_cka" in result and j > 0:
      row["linear_cka_prev"] = result["linear_cka"][j - 1][j]
      row["rbf_cka_prev"] = result["rbf_cka"][j - 1][j]
    rows.append(row)
  return rows


# ------------------------------------------------------------------------------------------------
# The whole pipeline.
# ------------------------------------------------------------------------------------------------


def evaluate_params(config, params: Any, *, num_train: int = 512, num_test: int = 512,
                    task_source: str | None = None, data: EvalData | None = None,
                    seed: int = 0, probe_steps: int = 300,
                    attentive_blocks: Sequence[int] | None = None,
                    attentive_kwargs: dict | None = None, token_clips: int = 256,
                    batch_size: int = 32, extractor: features_lib.FeatureExtractor | None = None,
                    attentive_norms: Sequence[str] = ("layernorm",)) -> dict[str, Any]:
  """Depth-wise evaluation of the encoder in `params` (full tree or TrainState; never modified).

  data: pre-loaded clips (reuse them to compare several models on identical data); otherwise
    `num_train` / `num_test` clips of config.data (or `task_source`) are rendered.
  attentive_blocks: depths that also get an attentive probe; default: the last block. Pass () to
    skip it (it is the slowest part). `readout_block(depth)` gives the 4DS 0.95-depth block.
  attentive_norms: token normalisations of the attentive probe, each a separate probe.
  token_clips: test clips whose tokens feed the token-level statistics.
  Deterministic for a given `seed` (probe initialisation and minibatch order).
  """
  start = time.perf_counter()
  if data is None:
    data = load_eval_data(config, num_train=num_train, num_test=num_test, task_source=task_source)
  extractor = extractor or features_lib.FeatureExtractor(config, batch_size=batch_size)
  depth = extractor.model.encoder_depth
  if attentive_blocks is None:
    attentive_blocks = (depth,)
  attentive_blocks = tuple(int(b) for b in attentive_blocks)
  test_token_blocks = tuple(range(depth + 1))
  train_feats = extractor(params, data.train_videos, token_blocks=attentive_blocks)
  # The attentive probe needs tokens of every test clip at its blocks; the token statistics only
  # need a subset, which bounds memory for deep models. One pass gives both.
  limits = {b: None if b in attentive_blocks else token_clips for b in test_token_blocks}
  test_feats = extractor(params, data.test_videos, token_blocks=test_token_blocks,
                         token_clips=limits)
  extract_seconds = time.perf_counter() - start
  result = depthwise_analysis(train_feats, data.train_labels, test_feats, data.test_labels,
                              data.num_classes, seed=seed, probe_steps=probe_steps,
                              attentive_blocks=attentive_blocks,
                              attentive_kwargs=attentive_kwargs, token_stat_clips=token_clips,
                              attentive_norms=attentive_norms)
  result.update(task_source=data.source, seed=seed,
                timing={"features_seconds": extract_seconds,
                        "total_seconds": time.perf_counter() - start})
  return result
