"""Offline demo: what every demo step shares (synthetic GTA5-style -> Cityscapes-style data).

Not run on its own. The demo stage files inherit the REAL stage config first and this file
second, so they run the reference recipe with only demo-scale settings changed: a tiny
backbone, 128x64 images, 40-150 iterations a run, learning rates for that short schedule,
and no pretrained weights. scripts/proda_demo.sh runs everything; data come from
`python -m proda.demo.synthetic --out demo/data --size 128,64`.

Every relative path below (data, logs, pseudo labels, checkpoints) is under --root demo/.
"""
_base_ = "../gta2city_base.py"
root = "demo"
src_rootpath = "data/GTA5"
tgt_rootpath = "data/cityscapes"
src_img_size = [128, 64]   # the generator's size: no first resize
tgt_img_size = [128, 64]
resize = 128               # RandomSized: widths 64..192, then a 96x48 crop (reference: 2200 / 896x512)
rcrop = [96, 48]
backbone_layers = [1, 1, 1, 1]
trim_aspp = True           # 96x48 crops give 7x13 feature maps: ASPP's dilation 12-24 taps read padding only;
                           # skipping them computes the same function ~1.6x faster (docs/fidelity.md)
bn = "bn"
bs = 2                     # reference: 4
num_workers = 0            # 128x64 PNGs load in microseconds; workers would only compete for 2 cores
print_interval = 25
val_interval = 100000     # validate once, at the end: the demo reports each run's final model
simclr_path = "pretrained/demo_backbone.pth"  # stand-in for the SimCLR backbone, see gta2city_stage2.py
