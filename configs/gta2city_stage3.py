"""GTA5 -> Cityscapes stage 3: a second round of self-distillation, from the stage-2 model.

    python -m proda.train --config configs/gta2city_stage3.py

Needs the pseudo labels of gta2city_stage3_pseudo.py; scripts/proda_stage3.sh runs both steps.
Reference README: train.py --name gta2citylabv2_stage3 --stage stage3 --used_save_pseudo
--path_LP Pseudo/gta2citylabv2_stage2 --resume_path ./logs/gta2citylabv2_stage2/...best_model.pkl
--S_pseudo 1 --threshold 0.95 --distillation 1 --finetune --lr 6e-4 --student_init simclr
--bn_clr --ema_bn. Without --no_resume the student starts from the stage-2 model; --ema_bn
gives the teacher the extra batch norm the stage-2 model has. Published: 57.5 mIoU.
"""
_base_ = ["gta2city_base.py", "recipes/distill.py"]
name = "gta2citylabv2_stage3"
stage = "stage3"
path_LP = "Pseudo/gta2citylabv2_stage2"
resume_path = "logs/gta2citylabv2_stage2/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
ema_bn = True
