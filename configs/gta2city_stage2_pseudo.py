"""GTA5 -> Cityscapes stage 2, step 1: hard pseudo labels (flip-averaged) of the stage-1 model.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage2_pseudo.py

Reference README: generate_pseudo_label.py --name gta2citylabv2_stage1Denoise --flip
--resume_path ./logs/gta2citylabv2_stage1Denoise/...best_model.pkl --no_droplast.
Writes Pseudo/gta2citylabv2_stage1Denoise/<image>.png, _conf.npy, _color.png.
"""
_base_ = "gta2city_base.py"
name = "gta2citylabv2_stage1Denoise"
flip = True
no_droplast = True
resume_path = "logs/gta2citylabv2_stage1Denoise/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
