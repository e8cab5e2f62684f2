"""Write the offline demo's stand-in for the SimCLR backbone: a checkpoint's backbone, no head.

    python scripts/proda_demo_backbone.py demo/logs/demo_src_only/..._best_model.pkl demo/pretrained/demo_backbone.pth

Stages 2 and 3 of the real recipe start the student from a SimCLR (self-supervised ImageNet)
ResNet-101, read from --simclr_path as {'state_dict': backbone weights}. The demo has no such
model; it uses the backbone of its source-only network instead (a generic pretrained backbone
that owes nothing to the teacher's adaptation). The classifier (layer5) and the extra batch
norm (bn_pretrain) are left out, so they start fresh, as they do from SimCLR weights.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict

import torch

from proda.files import CheckpointError
from proda.utils import TRUST_FLAG, atomic_save, load_checkpoint, set_trust_checkpoint

NOT_BACKBONE = ("layer5.", "bn_pretrain.")  # ProDA's head and the SimCLR batch norm


def backbone_state(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """The ResNet backbone tensors of a ProDA checkpoint."""
    state = checkpoint["ResNet101"]["model_state"]
    return {k: v for k, v in state.items() if not k.startswith(NOT_BACKBONE)}


def main() -> None:
    """Command line: CHECKPOINT OUT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a ProDA checkpoint (e.g. the demo's source-only best model)")
    parser.add_argument("out", help="output file, {'state_dict': ...} as --simclr_path expects")
    parser.add_argument(TRUST_FLAG, action="store_true",
                        help="also load a checkpoint that pickles arbitrary objects: it can run any code, "
                             "so only for a file from a source you trust")
    args = parser.parse_args()
    set_trust_checkpoint(args.trust_checkpoint)
    try:
        checkpoint = load_checkpoint(args.checkpoint, what="checkpoint")
        try:
            state = backbone_state(checkpoint)
        except (KeyError, TypeError):
            raise CheckpointError(f"{args.checkpoint} is not a ProDA checkpoint (no ['ResNet101']['model_state'])")
        atomic_save({"state_dict": state}, args.out)
    except (CheckpointError, OSError) as err:
        sys.exit(f"{parser.prog}: error: {err}")
    print(f"wrote {len(state)} backbone tensors of {args.checkpoint} to {args.out}")


if __name__ == "__main__":
    main()
