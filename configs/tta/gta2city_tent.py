"""Tent paper, GTA5 -> Cityscapes segmentation, row "tent": episodic entropy minimisation on each image.

    python -m proda.test --config configs/tta/gta2city_tent.py

Episodic, one image at a time (the network and optimiser are restored before every image), several
gradient steps on the image's mean pixel entropy, updating the batch norms' scale and shift (with
the image's own statistics). tta_steps = 10 follows our reading of the paper's segmentation
protocol; the optimiser and learning rate are the tent reference's defaults (Adam, 1e-3), as the
paper states none for segmentation that this repository could check. What differs from the paper
(model, resolution) is listed in docs/proda.md.
"""
_base_ = "gta2city_source.py"
name = "gta2city_tta_tent"
tta = "tent"
tta_episodic = True
tta_steps = 10
tta_optim = "adam"
tta_lr = 1e-3
tta_bn_stats = "batch"
results_json = "logs/gta2city_tta/tent.json"
