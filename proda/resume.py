"""Compatibility: the samplers moved to proda/data/sampling.py, the resume state to proda/checkpoint.py."""
from proda.data.sampling import SOURCE_STREAM, TARGET_STREAM, SeededItems, seeded_loader_kwargs  # noqa: F401
