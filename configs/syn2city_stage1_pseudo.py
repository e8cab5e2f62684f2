"""SYNTHIA -> Cityscapes stage 1, step 1: soft pseudo labels of the warm-up model.

    python -m proda.generate_pseudo_label --config configs/syn2city_stage1_pseudo.py

Reference README: generate_pseudo_label.py --name syn2citylabv2_warmup_soft --soft
--n_class 16 --resume_path ./pretrained/syn2citylabv2_warmup/...best_model.pkl --no_droplast.
Writes Pseudo/syn2citylabv2_warmup_soft/<image>.npy (class probabilities).
"""
_base_ = "syn2city_base.py"
name = "syn2citylabv2_warmup_soft"
soft = True
no_droplast = True
resume_path = "pretrained/syn2citylabv2_warmup/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
