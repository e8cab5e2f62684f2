"""ProDA: Prototypical Pseudo Label Denoising and Target Structure Learning (CVPR 2021).

A faithful, device-agnostic reproduction of microsoft/ProDA; see docs/code-map.md.
"""
