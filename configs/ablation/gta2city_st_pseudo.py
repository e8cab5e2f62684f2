"""ProDA Table 3, self-training rows, step 1: hard pseudo labels (and confidences) of the warm-up model.

    python -m proda.generate_pseudo_label --config configs/ablation/gta2city_st_pseudo.py

Writes Pseudo/gta2citylabv2_warmup/<image>.png and _conf.npy, read by gta2city_st.py and
gta2city_st_sce.py (which ignore labels of confidence <= their --threshold).
"""
_base_ = "../gta2city_base.py"
name = "gta2citylabv2_warmup"
no_droplast = True
resume_path = "pretrained/gta2citylabv2_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
