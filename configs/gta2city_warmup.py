"""GTA5 -> Cityscapes warm-up: source cross-entropy + output-space adversarial alignment.

    python -m proda.train --config configs/gta2city_warmup.py

The maintainers' recipe (configs/recipes/warmup.py) on this dataset pair. Writes
logs/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl; the released
warm-up model (43.3 mIoU) is the same file, and stage 1 starts from either.
"""
_base_ = ["gta2city_base.py", "recipes/warmup.py"]
name = "gta2citylabv2_warmup"
