"""ProDA Table 3, row "ST + SCE + PD + SL" (GTA5 -> Cityscapes): the full stage 1.

    python -m proda.generate_pseudo_label --config configs/gta2city_stage1_pseudo.py
    python -m proda.calc_prototype --config configs/gta2city_stage1_prototypes.py
    python -m proda.train --config configs/ablation/gta2city_st_sce_pd_sl.py

configs/gta2city_stage1.py unchanged (target structure learning gamma_1 = 10 with the
regulariser gamma_2 = 0.1), under the ablation's log name. The released stage-1 model: 53.7.
"""
_base_ = "../gta2city_stage1.py"
name = "gta2city_ablation_st_sce_pd_sl"
