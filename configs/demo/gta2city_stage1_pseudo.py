"""Offline demo, stage 1 step 1: soft pseudo labels of the demo's warm-up model.

    python -m proda.generate_pseudo_label --config configs/demo/gta2city_stage1_pseudo.py
"""
_base_ = ["../gta2city_stage1_pseudo.py", "gta2city_base.py"]
resume_path = "logs/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
