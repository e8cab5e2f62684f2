"""Tiny ProDA configs for end-to-end tests: a demo config's values at a small size and a few iterations."""
from typing import Any, Optional, Sequence


def tiny_config(root: Any, size: Sequence[int], crop: Sequence[int], iters: int, base: Optional[str] = None,
                **extra: Any) -> str:
    """Config text: images of `size` (W, H) under `root`, crops of `crop`, `iters` iterations on the CPU."""
    lines = [f'_base_ = "{base}"'] if base else []
    lines += [f'root = "{root}"', f"src_img_size = {list(size)}", f"tgt_img_size = {list(size)}",
              f"resize = {size[0]}", f"rcrop = {list(crop)}", f"train_iters = {iters}", "print_interval = 1",
              'device = "cpu"']
    return "\n".join(lines + [f"{key} = {value!r}" for key, value in extra.items()]) + "\n"
