"""Offline demo, optional: the oracle, trained on the synthetic TARGET labels with the source-only recipe.

    python -m proda.train --config configs/demo/oracle.py

Not part of scripts/proda_demo.sh's table (run it with DEMO_ORACLE=1): the upper bound that
shows how large the synthetic domain gap is.
"""
_base_ = ["src_only.py"]
name = "demo_oracle"
src_dataset = "cityscapes"
src_rootpath = "data/cityscapes"
