"""Compiling for a machine this one is not: compile-only TPU topologies (tpu.py) and the search for
the largest run that fits a chip's memory (fit.py). `python -m layerlock_jax.aot` drives both."""
