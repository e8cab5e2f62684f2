"""ProDA Table 3, row "ST + SCE" (GTA5 -> Cityscapes): self-training with the symmetric cross entropy.

    python -m proda.generate_pseudo_label --config configs/ablation/gta2city_st_pseudo.py
    python -m proda.train --config configs/ablation/gta2city_st_sce.py

gta2city_st.py with --rce (alpha 0.1, beta 1, the reference's weights).
"""
_base_ = "gta2city_st.py"
name = "gta2city_ablation_st_sce"
rce = True
