"""Oracle: supervised training on Cityscapes train labels, evaluated on Cityscapes val.

    python -m proda.train --config configs/src_only_cityscapes.py

Stage src_only with Cityscapes as the "source": the upper bound the adaptation stages are
compared with (same network, recipe and schedule as the source-only baselines). The
Cityscapes loader reads --tgt_rootpath for both roles. Writes logs/city_src_only/.
"""
_base_ = "gta2city_base.py"
name = "city_src_only"
stage = "src_only"
src_dataset = "cityscapes"
src_rootpath = "Dataset/cityscapes"
freeze_bn = True
lr = 2.5e-4
no_resume = True
student_init = "imagenet"
