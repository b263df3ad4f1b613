"""Tiny LayerLock on embedded Moving-MNIST: several freeze stages in a few CPU minutes.

  python -m layerlock_jax.main --config=configs/layerlock_tiny.py --workdir=/tmp/layerlock_tiny

configs/tiny.py plus LayerLock: 3-D RoPE after the first norm of each block, a pixel phase, then
one more block frozen every `interval` steps (up to 4 of 6) with the prediction target moving to
the newest frozen block's output, a learning-rate mini-warmup at each switch. Baselines are one
override away:
  --config.layerlock.target=pixel        progressive freezing with the pixel target only
  --config.layerlock.enabled=False       plain MAE with the same model
"""
import pathlib

from layerlock_jax.config import loading as config_loading

_tiny = config_loading.load_module(pathlib.Path(__file__).with_name("tiny.py"))


def get_config():
  c = _tiny.get_config()
  c.model.posemb = "rope"
  ll = c.layerlock
  ll.enabled = True
  ll.pixel_steps = 200             # pixel phase, then a freeze every 80 steps: stages at
  ll.interval = 80                 # 200, 280, 360, 440 (k = 1..4)
  ll.jump = 1
  ll.max_frozen = 4                # 2/3 of the 6 blocks
  ll.target = "latent"
  ll.target_norm = "layernorm"
  ll.keep_pixel_loss = True
  ll.mini_warmup_steps = 20
  return c
