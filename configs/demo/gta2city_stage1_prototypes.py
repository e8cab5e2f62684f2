"""Offline demo, stage 1 step 2: target prototypes of the demo's warm-up model.

    python -m proda.calc_prototype --config configs/demo/gta2city_stage1_prototypes.py
"""
_base_ = ["../gta2city_stage1_prototypes.py", "gta2city_base.py"]
resume_path = "logs/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
