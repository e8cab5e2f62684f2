"""The warm-up recipe, dataset-agnostic: source cross-entropy + output-space adversarial alignment.

The maintainers' recipe (microsoft/ProDA issues 27 and 42; the reference README has no warm-up
command): --stage warm_up --freeze_bn --gan LS --lr 2.5e-4 --adv 0.01 --no_resume, from
ImageNet weights. Inherited by gta2city_warmup.py and syn2city_warmup.py.
"""
stage = "warm_up"
freeze_bn = True
gan = "LS"
lr = 2.5e-4
adv = 0.01
no_resume = True
student_init = "imagenet"  # the reference's default ('stage1') also starts from ImageNet weights
