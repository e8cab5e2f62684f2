"""Convert SimCLRv2's TensorFlow ResNet-101 checkpoint into the file ProDA's stages 2-3 start from.

    pip install tensorflow-cpu   # only to read the TF checkpoint; not a project dependency
    python scripts/convert_simclrv2.py r101_1x_sk0/model.ckpt-250228 pretrained/simclr/r101_1x_sk0.pth

The input is the checkpoint prefix (the name before .index / .data-*); the output holds
{'state_dict': the backbone under torchvision's names}, as --simclr_path expects. See docs/simclr.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from proda.files import CheckpointError  # noqa: E402
from proda.simclr_convert import BASE_SCOPE, EMA_SCOPE, convert, read_tf_checkpoint, save  # noqa: E402


def main() -> None:
    """Command line: TF_CHECKPOINT_PREFIX OUT [--ema]; bad input ends in one line and exit status 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="TF checkpoint prefix, e.g. r101_1x_sk0/model.ckpt-250228")
    parser.add_argument("out", help="output file, e.g. pretrained/simclr/r101_1x_sk0.pth")
    parser.add_argument("--ema", action="store_true", help=f"convert the moving-average weights ({EMA_SCOPE}) "
                                                           f"instead of the trained ones ({BASE_SCOPE})")
    args = parser.parse_args()
    try:
        state = convert(read_tf_checkpoint(args.checkpoint), EMA_SCOPE if args.ema else BASE_SCOPE)
        save(state, args.out)
    except (CheckpointError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(state)} backbone tensors of {args.checkpoint} to {args.out}")


if __name__ == "__main__":
    main()
