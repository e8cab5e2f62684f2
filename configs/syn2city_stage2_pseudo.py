"""SYNTHIA -> Cityscapes stage 2, step 1: hard pseudo labels (flip-averaged) of the stage-1 model.

    python -m proda.generate_pseudo_label --config configs/syn2city_stage2_pseudo.py

Reference README: generate_pseudo_label.py --name syn2citylabv2_stage1Denoise --flip
--resume_path ./logs/syn2citylabv2_stage1Denoise/...best_model.pkl --no_droplast --n_class 16.
The reference README passes --resume_path ./logs/syn2citylabv2_stage2/...: a wrong folder (the
stage-2 model does not exist yet; the stage-1 model is meant, as in the GTA5 commands).
Writes Pseudo/syn2citylabv2_stage1Denoise/<image>.png, _conf.npy, _color.png.
"""
_base_ = "syn2city_base.py"
name = "syn2citylabv2_stage1Denoise"
flip = True
no_droplast = True
resume_path = "logs/syn2citylabv2_stage1Denoise/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
