"""ProDA Table 3, distillation into a self-supervised (SimCLRv2) student (GTA5 -> Cityscapes): stage 2.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage2_pseudo.py
    python -m proda.train --config configs/ablation/gta2city_distill_simclr.py

configs/gta2city_stage2.py unchanged, under the ablation's log name (released stage-2 model: 56.9).
"""
_base_ = "../gta2city_stage2.py"
name = "gta2city_ablation_distill_simclr"
