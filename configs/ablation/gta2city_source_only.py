"""ProDA Table 3, row "source only" (GTA5 -> Cityscapes): DeepLabv2 trained on GTA5 alone.

    python -m proda.train --config configs/ablation/gta2city_source_only.py

The repository's source-only baseline (configs/src_only_gta5.py) under the ablation's log name.
"""
_base_ = "../src_only_gta5.py"
name = "gta2city_ablation_source_only"
