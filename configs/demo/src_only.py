"""Offline demo, step 1: source-only training from random weights (the demo's "pretraining").

    python -m proda.train --config configs/demo/src_only.py

Stage src_only (the warm-up step without the discriminator) on the synthetic source set,
validated on the synthetic target val set. The demo has no ImageNet weights, so the network
starts from random weights, with trainable batch norm and a learning rate for training from
scratch. Its best checkpoint is the "source-only" row of the demo table and the starting
point of the warm-up, playing the part ImageNet weights play in the real recipe.
"""
_base_ = ["../src_only_gta5.py", "gta2city_base.py"]
name = "demo_src_only"
student_init = "random"
freeze_bn = False          # random weights: batch norm must learn its statistics
lr = 1e-2
bs = 4                     # from scratch, batches of 2 leave classes unlearnt (vegetation, in a test run)
max_iters = 150
train_iters = 150          # poly schedule over the demo's iterations (3 passes over the 200 source scenes)
