"""Source-only baseline, GTA5 -> Cityscapes: the warm-up recipe without the discriminator.

    python -m proda.train --config configs/src_only_gta5.py

Stage src_only trains on labelled GTA5 images only (the warm-up step minus the adversarial
loss) and validates on Cityscapes val, so it measures what adaptation adds. Writes
logs/gta2citylabv2_src_only/.
"""
_base_ = "gta2city_base.py"
name = "gta2citylabv2_src_only"
stage = "src_only"
freeze_bn = True
lr = 2.5e-4
no_resume = True
student_init = "imagenet"
