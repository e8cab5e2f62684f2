"""GTA5 -> Cityscapes (19 classes): what every GTA5 stage shares.

Not run on its own: the stage files inherit it (`_base_ = "gta2city_base.py"`). Each value
here is the reference default, written out so the setting is visible in one place. Data
roots are relative to the working directory (or to --root); override them on the command
line (--src_rootpath, --tgt_rootpath) or through scripts/proda_stage*.sh (SRC_ROOT, TGT_ROOT).
"""
src_dataset = "gta5"
tgt_dataset = "cityscapes"
n_class = 19
src_rootpath = "Dataset/GTA5"
tgt_rootpath = "Dataset/cityscapes"
model_name = "deeplabv2"
