"""The stage-1 recipe, dataset-agnostic: prototype-rectified soft pseudo labels + target structure learning.

The reference README's stage-1 flags: --used_save_pseudo --ema --proto_rectify
--moving_prototype --proto_consistW 10 --rce. Inherited by gta2city_stage1.py (which adds
--regular_w 0.1, as the GTA5 command does) and syn2city_stage1.py, with the name and paths.
"""
stage = "stage1"
used_save_pseudo = True
ema = True
proto_rectify = True
moving_prototype = True
proto_consistW = 10.0
rce = True
