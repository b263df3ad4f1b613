"""Configs: the schema with every field's default (defaults.py), loading config files and
overrides (loading.py), validation before JAX starts (validation.py), and the content config
files share: model sizes (sizes.py) and run variants (variants.py)."""
