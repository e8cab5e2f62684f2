"""Offline demo, stage 3 step 1: hard pseudo labels (flip) of the demo's stage-2 model.

    python -m proda.generate_pseudo_label --config configs/demo/gta2city_stage3_pseudo.py
"""
_base_ = ["../gta2city_stage3_pseudo.py", "gta2city_base.py"]
