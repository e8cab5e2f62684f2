"""Source-only baseline, SYNTHIA -> Cityscapes (16 classes): the warm-up recipe without the discriminator.

    python -m proda.train --config configs/src_only_synthia.py

Stage src_only trains on labelled SYNTHIA images only and validates on Cityscapes val.
Writes logs/syn2citylabv2_src_only/.
"""
_base_ = "syn2city_base.py"
name = "syn2citylabv2_src_only"
stage = "src_only"
freeze_bn = True
lr = 2.5e-4
no_resume = True
student_init = "imagenet"
