"""ProDA Table 3, row "ST" (GTA5 -> Cityscapes): conventional self-training on offline pseudo labels.

    python -m proda.generate_pseudo_label --config configs/ablation/gta2city_st_pseudo.py
    python -m proda.train --config configs/ablation/gta2city_st.py

Stage 1's run with every ProDA component off: the warm-up model's hard pseudo labels, fixed for
the whole run (no prototypical denoising, no EMA network), plain cross entropy (no symmetric CE),
no target structure learning (gamma_1 = 0), no regulariser (gamma_2 = 0). The paper does not state
the confidence threshold of its offline labels; 0.95 is the reference's threshold of hard labels
(stages 2-3), our choice here.
"""
_base_ = "../gta2city_stage1.py"
name = "gta2city_ablation_st"
path_LP = "Pseudo/gta2citylabv2_warmup"
threshold = 0.95
proto_rectify = False
moving_prototype = False
ema = False
rce = False
proto_consistW = 0.0
regular_w = 0.0
