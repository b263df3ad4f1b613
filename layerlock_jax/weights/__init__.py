"""Pretrained weights in and out: Hugging Face VideoMAE and 4DS checkpoints <-> our workdirs.

  python -m layerlock_jax.weights import --from=hf_videomae --path=DIR --workdir=W
  python -m layerlock_jax.weights import --from=4ds_npz --path=FILE.npz --workdir=W
  python -m layerlock_jax.weights export --workdir=W --to=hf_videomae --path=DIR

An import reads the released encoder (patch embedding, position code, blocks) into our parameter
layout, derives the config that reproduces its forward pass (sizes, position code, LayerNorm eps,
GELU form, input normalisation) and writes W as a step-0 training checkpoint of that config
(workdir.py), so `evaluate`, `extract_features` and `--config.init_from=W` read it like any run.

Every reader validates the whole file (keys, shapes, config fields) before anything is written:
a bad input raises one WeightsError naming the problem and leaves the destination untouched.
"""


class WeightsError(ValueError):
  """A weights file or directory we cannot read or represent; nothing was written."""


class Imported:
  """An encoder read from a foreign checkpoint.

  model / data: config fields (config.model.<k>, config.data.<k>) that reproduce its forward pass.
  params: {"embed": ..., "encoder": ...} numpy float32 arrays in our layout (see models/vit.py).
  """

  def __init__(self, source: str, path: str, model: dict, data: dict, params: dict):
    self.source, self.path, self.model, self.data, self.params = source, path, model, data, params
