"""SYNTHIA -> Cityscapes stage 3, step 1: hard pseudo labels (flip-averaged) of the stage-2 model.

    python -m proda.generate_pseudo_label --config configs/syn2city_stage3_pseudo.py

Reference README: generate_pseudo_label.py --name syn2citylabv2_stage2 --flip
--resume_path ./logs/syn2citylabv2_stage2/...best_model.pkl --no_droplast --bn_clr
--student_init simclr --n_class 16 (the stage-2 model carries the extra SimCLR batch norm).
The README's download folder for the released stage-2 model, pretrained/stn2citylabv2_stage2/,
is a typo for syn2citylabv2_stage2.
Writes Pseudo/syn2citylabv2_stage2/.
"""
_base_ = "syn2city_base.py"
name = "syn2citylabv2_stage2"
flip = True
no_droplast = True
bn_clr = True
student_init = "simclr"
resume_path = "logs/syn2citylabv2_stage2/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
