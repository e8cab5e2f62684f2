"""Offline demo, stage 1 step 3: the reference stage-1 recipe at demo scale.

    python -m proda.train --config configs/demo/gta2city_stage1.py   (after steps 1 and 2)

Every loss setting is the reference's (ema, proto_rectify, moving_prototype,
proto_consistW 10, rce, regular_w 0.1); only the length of the run and its learning rate
are scaled to the demo.
"""
_base_ = ["../gta2city_stage1.py", "gta2city_base.py"]
resume_path = "logs/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
lr = 1e-3
max_iters = 50
train_iters = 50
