"""Pseudo-label files checked before they are trusted: what generate_pseudo_label keeps on a rerun
and what a training run reads.

Two kinds of check. Header checks read a file's header and test its size (np.load with
mmap_mode: a cut .npy does not map; PIL's verify: a cut PNG fails its chunk CRCs): shape,
dtype and completeness at a fraction of a millisecond per file, so every file is checked.
Value checks need the decoded data (soft probabilities finite and in [0, 1], hard labels a
class or the ignore value 250): a full pass over Cityscapes' 2,975 training labels costs
minutes at the reference size (docs/reliability.md), so a run checks a sample when it
starts and every file again when the loader reads it, on data already in memory.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image

from proda.utils import IGNORE_INDEX

START_SAMPLE = 16  # files value-checked when a run starts (spread over the split); the rest when read


def npy_header(path: str) -> Tuple[Tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file whose data is all there (ValueError / EOFError / OSError if not)."""
    array = np.load(path, mmap_mode="r")  # maps the data: a file shorter than its header says fails
    shape, dtype = array.shape, array.dtype
    del array  # unmaps
    return shape, dtype


def png_header(path: str) -> Tuple[Tuple[int, int], str]:
    """(W, H) and mode of a PNG whose every chunk is intact (OSError / SyntaxError if not)."""
    with Image.open(path) as image:
        size, mode = image.size, image.mode
        image.verify()  # reads every chunk and checks its CRC without decoding pixels
    return size, mode


def soft_problem(shape: Tuple[int, ...], dtype: np.dtype, n_class: int) -> Optional[str]:
    """Why a soft pseudo label of this shape and dtype cannot be one of n_class classes (None: it can)."""
    if len(shape) != 3 or shape[0] != n_class or min(shape) < 1:
        return f"has shape {'x'.join(map(str, shape))}, not {n_class} x h x w class probabilities (--n_class {n_class})"
    if not np.issubdtype(dtype, np.floating):
        return f"has dtype {dtype}, not floating-point probabilities"
    return None


def soft_value_problem(probs: np.ndarray) -> Optional[str]:
    """Why soft pseudo labels are no probabilities (NaN, inf or outside [0, 1]), or None.
    min / max propagate NaN, so two reductions test all three."""
    low, high = probs.min(), probs.max()
    if low >= 0 and high <= 1:
        return None
    return f"holds values from {low} to {high}, not probabilities in [0, 1]"


def hard_value_problem(labels: np.ndarray, n_class: int) -> Optional[str]:
    """Why a hard pseudo-label map holds something other than a class 0..n_class-1 or the ignore
    value, or None (one max over the map when it is clean)."""
    if labels.max() < n_class:
        return None
    bad = labels[(labels >= n_class) & (labels != IGNORE_INDEX)]
    if bad.size == 0:
        return None
    return (f"holds label {int(bad[0])} ({bad.size} pixels), not a class 0..{n_class - 1} "
            f"or the ignore value {IGNORE_INDEX} (--n_class {n_class})")


def finite_problem(values: np.ndarray) -> Optional[str]:
    """Why confidences are not all finite, or None (float16: tested on the exponent bits, ~3x faster)."""
    if values.dtype == np.float16:
        finite = not ((values.view(np.uint16) & 0x7C00) == 0x7C00).any()
    else:
        finite = bool(np.isfinite(values).all())
    return None if finite else "holds NaN or infinite confidences"
