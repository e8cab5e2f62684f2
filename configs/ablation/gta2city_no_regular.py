"""Component switch, not a row of ProDA's Table 3: the full stage 1 without the regulariser l_reg.

    python -m proda.train --config configs/ablation/gta2city_no_regular.py   (after stage 1's steps 1-2)

configs/gta2city_stage1.py with gamma_2 = 0 (the SYNTHIA command runs stage 1 so as well).
"""
_base_ = "../gta2city_stage1.py"
name = "gta2city_ablation_no_regular"
regular_w = 0.0
