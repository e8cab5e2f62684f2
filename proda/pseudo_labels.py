"""Which saved pseudo labels a training run reads: the one decision, made from the options.

Stage 1 with --proto_rectify denoises soft labels (--path_soft, C x h x w probabilities);
every other stage reads hard labels (--path_LP), ignoring those whose confidence <= --threshold.
The target loader reads what this says, and the training run's record (proda/manifest.py)
holds the manifest of the same folder. Torch-free: the shell helpers import the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class PseudoLabels:
    """Saved pseudo labels a training split reads: 'soft' (C x h x w probabilities, stage 1) or
    'hard' (label maps, stages 2-3), their folder, and the confidence threshold of hard labels."""

    kind: str
    folder: str
    threshold: float = -1

    def __post_init__(self) -> None:
        if self.kind not in ("soft", "hard"):
            raise ValueError(f"pseudo-label kind must be 'soft' or 'hard', not {self.kind!r}")


def saved_pseudo_labels(opt: Any) -> Optional[PseudoLabels]:
    """The saved pseudo labels the target training split reads: none without --used_save_pseudo;
    soft ones (--path_soft) for --proto_rectify's stage 1, hard ones (--path_LP, --threshold) otherwise."""
    if not opt.used_save_pseudo:
        return None
    if opt.proto_rectify:
        return PseudoLabels("soft", opt.path_soft)
    return PseudoLabels("hard", opt.path_LP, opt.threshold)
