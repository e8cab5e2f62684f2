"""The self-distillation recipe of stages 2 and 3, dataset-agnostic.

The reference README's flags shared by both stages: --used_save_pseudo --S_pseudo 1
--threshold 0.95 --distillation 1 --finetune --lr 6e-4 --student_init simclr --bn_clr.
Stage 2 adds --no_resume (the teacher is not loaded into the student), stage 3 --ema_bn.
"""
used_save_pseudo = True
S_pseudo = 1.0
threshold = 0.95
distillation = 1.0
finetune = True
lr = 6e-4
student_init = "simclr"
bn_clr = True
