"""SYNTHIA -> Cityscapes stage 1: prototypical pseudo-label denoising + target structure learning.

    python -m proda.train --config configs/syn2city_stage1.py

Needs the soft pseudo labels (syn2city_stage1_pseudo.py) and the prototypes
(syn2city_stage1_prototypes.py) of the warm-up model; scripts/proda_stage1.sh runs all three.
Reference README: train.py --name syn2citylabv2_stage1Denoise --used_save_pseudo --ema
--proto_rectify --moving_prototype --path_soft Pseudo/syn2citylabv2_warmup_soft
--resume_path ./pretrained/syn2citylabv2_warmup/...best_model.pkl --proto_consistW 10 --rce
(with --src_dataset synthia --n_class 16; unlike GTA5, no --regular_w).
Writes logs/syn2citylabv2_stage1Denoise/ (published: 51.9 mIoU).
"""
_base_ = ["syn2city_base.py", "recipes/stage1.py"]
name = "syn2citylabv2_stage1Denoise"
path_soft = "Pseudo/syn2citylabv2_warmup_soft"
resume_path = "pretrained/syn2citylabv2_warmup/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
