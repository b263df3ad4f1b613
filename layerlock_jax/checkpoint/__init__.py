"""Checkpoints: save / resume of whole runs (manager.py), parameters only for new runs and tools
(params.py), and starting a run from another run's step (fork.py)."""
