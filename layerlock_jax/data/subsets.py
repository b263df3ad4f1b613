"""Which clips a quick evaluation takes: labels read without decoding, stratified seeded subsets.

A folder source lists its files sorted by class, so the first N clips of a split cover only the
first few classes. `stratified_subset` takes N clips spread over every class instead: each class
contributes in turn (round-robin over a seeded class order, each class's clips in a seeded order),
so class counts differ by at most one wherever a class has enough clips, and the same
(labels, N, seed) always gives the same clips.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def split_labels(source: Any) -> dict[str, np.ndarray]:
  """{label name: int32 [len(source)]} for every record of `source`, without decoding any video.

  Sources with a `labels(index)` method (the embedded sources, the file-backed ClipSources) are
  asked record by record; a source without one is read item by item (decoded).
  """
  n = len(source)
  read = getattr(source, "labels", None)
  if read is None:
    def read(i):
      return {k: v for k, v in source[i].items() if k != "video"}
  rows = [read(i) for i in range(n)]
  names = list(rows[0]) if rows else []
  return {k: np.asarray([r[k] for r in rows], np.int32) for k in names}


def stratified_subset(labels: np.ndarray | None, num: int, seed: int, *,
                      total: int | None = None) -> np.ndarray:
  """`num` record indices (sorted, int64) spread evenly over the classes of `labels`.

  Round k takes the k-th clip (in a seeded per-class order) of every class that has one, the
  classes in a seeded order; the subset is the first `num` clips of that sequence. Without labels
  (`labels` None: an unlabelled source of `total` records) the subset is a seeded uniform draw.
  """
  n = len(labels) if labels is not None else int(total)
  if not 0 < num <= n:
    raise ValueError(f"a subset of {num} clip(s) needs 1 <= num <= {n} (the split's size)")
  rng = np.random.default_rng([int(seed) % 2**63, n, num])
  if num == n:
    return np.arange(n, dtype=np.int64)
  if labels is None:
    return np.sort(rng.choice(n, num, replace=False)).astype(np.int64)
  labels = np.asarray(labels)
  classes = rng.permutation(np.unique(labels))
  rank = np.empty(n, np.int64)          # position of each clip within its class's seeded order
  class_order = np.empty(n, np.int64)   # position of its class in the seeded class order
  for pos, c in enumerate(classes):
    members = rng.permutation(np.flatnonzero(labels == c))
    rank[members] = np.arange(members.size)
    class_order[members] = pos
  chosen = np.lexsort((class_order, rank))[:num]
  return np.sort(chosen).astype(np.int64)
