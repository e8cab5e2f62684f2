"""SYNTHIA -> Cityscapes (16 classes; papers also report the 13-class mIoU): what every SYNTHIA stage shares.

Not run on its own: the stage files inherit it (`_base_ = "syn2city_base.py"`). The README
passes --src_dataset synthia --n_class 16 on every SYNTHIA command; the other values are the
reference defaults, written out so the setting is visible in one place. Data roots are
relative to the working directory (or to --root); override them on the command line
(--src_rootpath, --tgt_rootpath) or through scripts/proda_stage*.sh (SRC_ROOT, TGT_ROOT).
"""
src_dataset = "synthia"
tgt_dataset = "cityscapes"
n_class = 16
src_rootpath = "Dataset/SYNTHIA-RAND-CITYSCAPES"  # the reference scripts' comments; its README writes a placeholder
tgt_rootpath = "Dataset/cityscapes"
model_name = "deeplabv2"
