"""ProDA Table 3, distillation into a supervised (ImageNet) student (GTA5 -> Cityscapes).

    python -m proda.generate_pseudo_label --config configs/gta2city_stage2_pseudo.py
    python -m proda.train --config configs/ablation/gta2city_distill_imagenet.py

Stage 2 (configs/gta2city_stage2.py: the stage-1 model as teacher, its hard pseudo labels, KL to
the teacher) with the student initialised from torchvision's ImageNet ResNet-101 instead of the
self-supervised SimCLRv2 one; without the SimCLR student's extra batch norm (--bn_clr).
"""
_base_ = "../gta2city_stage2.py"
name = "gta2city_ablation_distill_imagenet"
student_init = "imagenet"
bn_clr = False
