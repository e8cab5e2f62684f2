"""GTA5 -> Cityscapes stage 3, step 1: hard pseudo labels (flip-averaged) of the stage-2 model.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage3_pseudo.py

Reference README: generate_pseudo_label.py --name gta2citylabv2_stage2 --flip
--resume_path ./logs/gta2citylabv2_stage2/...best_model.pkl --no_droplast --bn_clr
--student_init simclr (the stage-2 model carries the extra SimCLR batch norm).
Writes Pseudo/gta2citylabv2_stage2/.
"""
_base_ = "gta2city_base.py"
name = "gta2citylabv2_stage2"
flip = True
no_droplast = True
bn_clr = True
student_init = "simclr"
resume_path = "logs/gta2citylabv2_stage2/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
