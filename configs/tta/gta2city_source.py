"""Tent paper, GTA5 -> Cityscapes segmentation, row "source": the source-only model, not adapted.

    python -m proda.test --config configs/tta/gta2city_source.py

The model is this repository's source-only DeepLabv2 ResNet-101 (configs/src_only_gta5.py), not the
paper's HRNet-W18 (docs/proda.md, "Tent on segmentation as the tent paper ran it"). One image a
batch, as the adapted rows run.
"""
_base_ = "../gta2city_base.py"
name = "gta2city_tta_source"
resume_path = "logs/gta2citylabv2_src_only/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
bs = 1
tta = "none"
results_json = "logs/gta2city_tta/source.json"
