"""The file names ProDA's stages share, as the reference names them (torch-free)."""
from __future__ import annotations

import argparse
import os


def model_file(opt: argparse.Namespace, kind: str) -> str:
    """Checkpoint path in the log dir, named as the reference names it (kind: current | best | last [added])."""
    return os.path.join(opt.logdir, f"from_{opt.src_dataset}_to_{opt.tgt_dataset}_on_{opt.model_name}_{kind}_model.pkl")


def prototype_file(opt: argparse.Namespace, dataset: str) -> str:
    """Prototype file beside --resume_path, named as the reference names it."""
    return os.path.join(os.path.dirname(opt.resume_path), f"prototypes_on_{dataset}_from_{opt.model_name}")
