"""GTA5 -> Cityscapes stage 1, step 1: soft pseudo labels of the warm-up model.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage1_pseudo.py

Reference README: generate_pseudo_label.py --name gta2citylabv2_warmup_soft --soft
--resume_path ./pretrained/gta2citylabv2_warmup/...best_model.pkl --no_droplast.
Writes Pseudo/gta2citylabv2_warmup_soft/<image>.npy (class probabilities).
"""
_base_ = "gta2city_base.py"
name = "gta2citylabv2_warmup_soft"
soft = True
no_droplast = True
resume_path = "pretrained/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
