"""Tent paper, GTA5 -> Cityscapes segmentation, row "BN": each image normalised with its own statistics.

    python -m proda.test --config configs/tta/gta2city_norm.py

gta2city_source.py with test-batch batch-norm statistics (one image a batch), no gradient step.
"""
_base_ = "gta2city_source.py"
name = "gta2city_tta_norm"
tta = "norm"
results_json = "logs/gta2city_tta/norm.json"
