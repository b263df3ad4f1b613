"""`python -m layerlock_jax.checkpoint WORKDIR`: list the checkpoints and what they hold."""
import sys

from layerlock_jax.checkpoint import manager

if __name__ == "__main__":
  sys.exit(manager.main(sys.argv))
