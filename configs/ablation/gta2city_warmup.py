"""ProDA Table 3, row "warm-up" (GTA5 -> Cityscapes): source CE + output-space adversarial alignment.

    python -m proda.train --config configs/ablation/gta2city_warmup.py

The maintainers' warm-up recipe (configs/gta2city_warmup.py) under the ablation's log name. The
paper's warm-up scored 41.6; the released one (43.3) came from a retraining. Every later row
starts from the released warm-up model, as stage 1 does.
"""
_base_ = "../gta2city_warmup.py"
name = "gta2city_ablation_warmup"
