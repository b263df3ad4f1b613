"""Cheap in-training evaluation: a linear probe, kNN and collapse statistics at a few blocks.

Called by the train loop every config.eval_every steps. It must be cheap relative to training and
must not disturb it, so:
  * the clips (a few hundred per split) are rendered once and cached with the evaluator;
  * the encoder forward is one jitted function over fixed-size batches (compiled once per freeze
    stage, because the TrainState's frozen / trainable split changes the parameter structure);
  * it reads the TrainState's parameters in place (no merge, no copy, nothing donated), never
    touches the optimizer state, the data iterator or any RNG of the run;
  * only the linear probe (L-BFGS, compiled once per task) and kNN run, at a couple of depths.
Every process computes the same numbers (the parameters may be sharded across all of them); the
caller logs them from process 0 as usual.

Metrics (all scalars, for metrics.jsonl and TensorBoard):
  eval/<task>/linear_block<j>     linear-probe test accuracy on mean-pooled block-j tokens
  eval/<task>/knn_top1_block<j>   leave-one-out cosine kNN top-1 on the test clips
  eval/collapse/{effective_rank, normalized_std, collapsed}_block<j>
  eval/seconds                    wall time of this evaluation
"""
import logging
import time
from typing import Any, Callable, Sequence
from layerlock_jax.evaluation import analysis
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import features as features_lib
from layerlock_jax.evaluation import probes
from layerlock_jax import plan


def default_blocks(encoder_depth: int) -> tuple[int, ...]:
  """The middle and the last block: where LayerLock's targets come from, and what readouts use."""
  return tuple(sorted({max(1, encoder_depth // 2), encoder_depth}))


class PeriodicEvaluator:
  """Holds the cached clips and the compiled forward of one run's in-training evaluation."""

  def __init__(self, config, *, num_train: int = 256, num_test: int = 256,
               blocks: Sequence[int] | None = None, seed: int = 0, probe_steps: int = 200,
               batch_size: int = 32, sharding=None, task_source: str | None = None,
               tasks: Sequence[str] | None = None):
    depth = plan.encoder_depth(config)
    self.blocks = tuple(default_blocks(depth) if blocks is None else blocks)
    if any(not 0 <= b <= depth for b in self.blocks):
      raise ValueError(f"blocks must lie in [0, {depth}], got {self.blocks}")
    self.seed, self.probe_steps = seed, probe_steps
    clips = int(config.data.num_clips)
    self.data = depthwise.load_eval_data(config, num_train=min(num_train, clips),
                                         num_test=min(num_test, clips), task_source=task_source,
                                         tasks=tasks)
    self.extractor = features_lib.FeatureExtractor(config, batch_size=batch_size,
                                                   sharding=sharding)

  def __call__(self, params: Any) -> dict[str, float]:
    """Metrics for `params` (a TrainState or a full parameter tree; read only)."""
    start = time.perf_counter()
    train = self.extractor(params, self.data.train_videos)
    test = self.extractor(params, self.data.test_videos)
    metrics: dict[str, float] = {}
    for name, classes in self.data.num_classes.items():
      ytr, yte = self.data.train_labels[name], self.data.test_labels[name]
      for b in self.blocks:
        lin = probes.linear_probe(train.pooled[b], ytr, test.pooled[b], yte, classes,
                                  seed=self.seed, steps=self.probe_steps)
        metrics[f"eval/{name}/linear_block{b}"] = lin["accuracy"]
        metrics[f"eval/{name}/knn_top1_block{b}"] = probes.knn_retrieval(
            test.pooled[b], yte, ks=(1,))["top1"]
    for b in self.blocks:
      stats = analysis.collapse_statistics(test.pooled[b])
      metrics[f"eval/collapse/effective_rank_block{b}"] = stats["effective_rank"]
      metrics[f"eval/collapse/normalized_std_block{b}"] = stats["pooled_normalized_std"]
      metrics[f"eval/collapse/collapsed_block{b}"] = float(stats["collapsed"])
    metrics["eval/seconds"] = time.perf_counter() - start
    return metrics


def make_evaluator(trainer, **kwargs) -> Callable[[Any, int], dict[str, float]]:
  """The train loop's in-training evaluation for `trainer`'s run: `evaluate(state, step)` gives
  the metrics of `state` at `step` (see the module docstring). train.run calls this factory once,
  at the first evaluation.

  The evaluator (clips + compiled forward) is built here, on the trainer's mesh (outputs
  replicated so every process can read them). If the run's data source cannot give labelled
  train/test clips, evaluation is switched off for the run with one error log line rather than
  killing the training job. kwargs go to PeriodicEvaluator.
  """
  try:
    evaluator = PeriodicEvaluator(trainer.config, sharding=trainer.replicated, **kwargs)
  except (ValueError, KeyError, FileNotFoundError, NotImplementedError) as err:
    logging.error("in-training evaluation disabled: cannot load labelled clips of "
                  "config.data (%s: %s)", type(err).__name__, err)
    return lambda state, step: {}

  def evaluate(state, step: int) -> dict[str, float]:
    metrics = evaluator(state)
    logging.info("eval at step %d: %s", step, ", ".join(
        f"{k.removeprefix('eval/')}={v:.3g}" for k, v in sorted(metrics.items())))
    return metrics
  evaluate.evaluator = evaluator  # the clips and compiled forward, for inspection
  return evaluate
