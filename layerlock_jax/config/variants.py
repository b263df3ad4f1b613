"""Configs derived from a run's config: its unfrozen baseline and a one-event freeze of it.

They define the cells of the "layers converge in depth order" experiment (a baseline MAE run, and
the same run with blocks 1..L frozen from step T on); config files build on them too
(configs/experiments/layerlock_claims.py `mae,freeze=L@T`), so they live here, beside the config
schema, and not with the experiment's training and plotting code. Pure Python (ml_collections).
"""
import ml_collections


def _copy(config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def baseline_config(config) -> ml_collections.ConfigDict:
  """The unfrozen pixel-MAE run of the same model: every freezing / latent objective off."""
  c = _copy(config)
  c.layerlock.enabled = False
  c.layerlock.explicit = ()
  c.naive_latent.enabled = False
  if "blockwise" in c:
    c.blockwise.enabled = False
  return c


def frozen_config(config, layers: int, step: int) -> ml_collections.ConfigDict:
  """The baseline with blocks 1..`layers` frozen from `step` on, pixel target throughout."""
  c = baseline_config(config)
  ll = c.layerlock
  ll.enabled = True
  ll.target = "pixel"
  ll.keep_pixel_loss = True
  ll.multi_target = False
  ll.explicit = ((int(step), int(layers)),)
  ll.max_frozen = int(layers)  # the cap must admit L; the explicit event is the only one
  return c
