"""Offline demo, stage 3 step 2: the reference second distillation at demo scale.

    python -m proda.train --config configs/demo/gta2city_stage3.py   (after step 1)
"""
_base_ = ["../gta2city_stage3.py", "gta2city_base.py"]
lr = 1e-3
max_iters = 40
train_iters = 40
