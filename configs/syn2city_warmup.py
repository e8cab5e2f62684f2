"""SYNTHIA -> Cityscapes warm-up: source cross-entropy + output-space adversarial alignment.

    python -m proda.train --config configs/syn2city_warmup.py

The maintainers' recipe (configs/recipes/warmup.py) on this dataset pair. Writes
logs/syn2citylabv2_warmup/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl; the released
warm-up model (41.4 mIoU) is the same file, and stage 1 starts from either.
"""
_base_ = ["syn2city_base.py", "recipes/warmup.py"]
name = "syn2citylabv2_warmup"
