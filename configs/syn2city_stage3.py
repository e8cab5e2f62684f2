"""SYNTHIA -> Cityscapes stage 3: a second round of self-distillation, from the stage-2 model.

    python -m proda.train --config configs/syn2city_stage3.py

Needs the pseudo labels of syn2city_stage3_pseudo.py; scripts/proda_stage3.sh runs both steps.
Reference README: train.py --name syn2citylabv2_stage3 --stage stage3 --used_save_pseudo
--path_LP Pseudo/syn2citylabv2_stage2 --resume_path ./logs/syn2citylabv2_stage2/...best_model.pkl
--S_pseudo 1 --threshold 0.95 --distillation 1 --finetune --lr 6e-4 --student_init simclr
--bn_clr --ema_bn. Without --no_resume the student starts from the stage-2 model; --ema_bn
gives the teacher the extra batch norm the stage-2 model has. Published: 55.5 mIoU (16 classes), 62.0 (13 classes).
"""
_base_ = ["syn2city_base.py", "recipes/distill.py"]
name = "syn2citylabv2_stage3"
stage = "stage3"
path_LP = "Pseudo/syn2citylabv2_stage2"
resume_path = "logs/syn2citylabv2_stage2/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
ema_bn = True
