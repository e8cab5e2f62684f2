"""Offline demo, stage 2 step 2: the reference distillation recipe at demo scale.

    python -m proda.train --config configs/demo/gta2city_stage2.py   (after step 1)

The real student starts from a SimCLR (self-supervised ImageNet) ResNet-101 that the demo
does not have. Its stand-in, demo/pretrained/demo_backbone.pth, is the backbone of the demo's
source-only model without its classifier (written by scripts/proda_demo.sh): like SimCLR's,
a generic pretrained backbone that owes nothing to the teacher's adaptation; the classifier
and the extra batch norm (bn_clr) start fresh, as in the real recipe.
"""
_base_ = ["../gta2city_stage2.py", "gta2city_base.py"]
lr = 1e-3
max_iters = 50
train_iters = 50
