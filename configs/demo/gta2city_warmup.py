"""Offline demo, step 2: adversarial warm-up, starting from the demo's source-only model.

    python -m proda.train --config configs/demo/gta2city_warmup.py

The maintainers' recipe (freeze_bn, LS-GAN, adv 0.01) with demo-scale iterations. The real
warm-up starts from ImageNet weights; the demo has none, and a discriminator trained against
a randomly initialised segmenter has nothing meaningful to align, so the demo starts from
the source-only model instead (its batch norm statistics are then frozen, as ImageNet's are
in the real recipe). The "warm-up" row of the table therefore shows what the adversarial
alignment adds to source-only training.
"""
_base_ = ["../gta2city_warmup.py", "gta2city_base.py"]
no_resume = False
resume_path = "logs/demo_src_only/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
student_init = "random"    # every weight comes from resume_path
lr = 1e-3
max_iters = 40
train_iters = 40
