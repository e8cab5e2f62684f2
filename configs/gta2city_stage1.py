"""GTA5 -> Cityscapes stage 1: prototypical pseudo-label denoising + target structure learning.

    python -m proda.train --config configs/gta2city_stage1.py

Needs the soft pseudo labels (gta2city_stage1_pseudo.py) and the prototypes
(gta2city_stage1_prototypes.py) of the warm-up model; scripts/proda_stage1.sh runs all three.
Reference README: train.py --name gta2citylabv2_stage1Denoise --used_save_pseudo --ema
--proto_rectify --moving_prototype --path_soft Pseudo/gta2citylabv2_warmup_soft
--resume_path ./pretrained/gta2citylabv2_warmup/...best_model.pkl --proto_consistW 10 --rce
--regular_w 0.1. Writes logs/gta2citylabv2_stage1Denoise/ (published: 53.7 mIoU).
"""
_base_ = ["gta2city_base.py", "recipes/stage1.py"]
name = "gta2citylabv2_stage1Denoise"
path_soft = "Pseudo/gta2citylabv2_warmup_soft"
resume_path = "pretrained/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
regular_w = 0.1  # the GTA5 command only
