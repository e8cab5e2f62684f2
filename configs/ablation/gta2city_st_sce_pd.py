"""ProDA Table 3, row "ST + SCE + PD" (GTA5 -> Cityscapes): prototypical pseudo-label denoising added.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage1_pseudo.py
    python -m proda.calc_prototype --config configs/gta2city_stage1_prototypes.py
    python -m proda.train --config configs/ablation/gta2city_st_sce_pd.py

Stage 1 without target structure learning: the warm-up model's soft pseudo labels rectified online
by the moving prototypes of the EMA network (--proto_rectify --moving_prototype --ema), symmetric
CE, and neither the prototype-consistency KL (gamma_1 = 0) nor the regulariser that the paper adds
with it (gamma_2 = 0).
"""
_base_ = "../gta2city_stage1.py"
name = "gta2city_ablation_st_sce_pd"
proto_consistW = 0.0
regular_w = 0.0
