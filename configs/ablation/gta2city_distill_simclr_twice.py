"""ProDA Table 3, a second round of self-distillation (GTA5 -> Cityscapes): stage 3.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage3_pseudo.py
    python -m proda.train --config configs/ablation/gta2city_distill_simclr_twice.py

configs/gta2city_stage3.py unchanged, under the ablation's log name (released stage-3 model: 57.5).
"""
_base_ = "../gta2city_stage3.py"
name = "gta2city_ablation_distill_simclr_twice"
