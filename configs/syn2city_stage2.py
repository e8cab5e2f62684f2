"""SYNTHIA -> Cityscapes stage 2: self-distillation of the stage-1 model into a SimCLR-initialised student.

    python -m proda.train --config configs/syn2city_stage2.py

Needs the hard pseudo labels of syn2city_stage2_pseudo.py and the SimCLRv2 ResNet-101
checkpoint (--simclr_path, default pretrained/simclr/r101_1x_sk0.pth); scripts/proda_stage2.sh
runs both steps. Reference README: train.py --name syn2citylabv2_stage2 --stage stage2
--used_save_pseudo --path_LP Pseudo/syn2citylabv2_stage1Denoise --resume_path
./logs/syn2citylabv2_stage1Denoise/...best_model.pkl (the README writes logs/syn2citylabv2_stage2/:
wrong, the stage-1 model is the teacher) --S_pseudo 1 --threshold 0.95
--distillation 1 --finetune --lr 6e-4 --student_init simclr --bn_clr --no_resume.
--resume_path is the teacher here; --no_resume keeps it out of the student. Published: 54.6 mIoU.
"""
_base_ = ["syn2city_base.py", "recipes/distill.py"]
name = "syn2citylabv2_stage2"
stage = "stage2"
path_LP = "Pseudo/syn2citylabv2_stage1Denoise"
resume_path = "logs/syn2citylabv2_stage1Denoise/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
no_resume = True
