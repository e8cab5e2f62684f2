"""SYNTHIA -> Cityscapes stage 1, step 2: initial target prototypes of the warm-up model.

    python -m proda.calc_prototype --config configs/syn2city_stage1_prototypes.py

Reference README: calc_prototype.py --resume_path ./pretrained/syn2citylabv2_warmup/...best_model.pkl --n_class 16.
Writes prototypes_on_cityscapes_from_deeplabv2 beside the warm-up checkpoint.
"""
_base_ = "syn2city_base.py"
name = "syn2citylabv2_warmup_prototypes"  # only names the log folder
resume_path = "pretrained/syn2citylabv2_warmup/from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"
