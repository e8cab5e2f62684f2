"""Draw the MNIST-C corruption grid of docs/offline-benchmark.md: corruption x severity, three test digits each.

    python docs/img/make_mnistc_grid.py [--params cifar|imagenet] [--out docs/img/mnistc_grid.png]

Uses the benchmark's own split (DATA_DIR/MNIST-C, built if missing) and corruption code, with the
same per-image seeds, so the picture shows images the model really sees.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's tent, not an installed one
from tent import mnistc  # noqa: E402
from tent.conf import ROBUSTBENCH_CORRUPTIONS, VALIDATION_CORRUPTIONS  # noqa: E402

DIGITS = 3  # test images per cell


def grid_rows(x_test: np.ndarray, params: str) -> list:
    """(row title, [clean strip] + one strip of DIGITS images per severity) for every corruption."""
    rows = []
    for corruption in ROBUSTBENCH_CORRUPTIONS + VALIDATION_CORRUPTIONS:
        strips = [np.hstack(list(mnistc.corrupt_images(x_test[:DIGITS], corruption, s, seed=0, params=params)))
                  for s in range(1, 6)]
        rows.append((corruption, strips))
    return rows


def draw(rows: list, clean: np.ndarray, title: str, out: str) -> None:
    """One figure: a column per severity, a row per corruption, the clean digits on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows) + 1, 5, figsize=(7.5, 0.52 * (len(rows) + 1) + 0.4))
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].imshow(clean)
    axes[0, 0].text(-4, 16, "clean", ha="right", va="center", fontsize=7)
    for r, (name, strips) in enumerate(rows, start=1):
        axes[r, 0].text(-4, 16, name, ha="right", va="center", fontsize=7)
        for s, strip in enumerate(strips):
            axes[r, s].imshow(strip)
    for s in range(5):
        axes[1, s].set_title(f"severity {s + 1}", fontsize=7, pad=2)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.96, bottom=0.005, wspace=0.05, hspace=0.25)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    from PIL import Image

    Image.open(out).convert("RGB").quantize(colors=64).save(out, optimize=True)  # a small file for the docs


def main() -> None:
    """Parse the options, corrupt three test digits, save the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="cifar", choices=mnistc.PARAM_SETS)
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--out", default="docs/img/mnistc_grid.png")
    args = parser.parse_args()
    (x_test,) = mnistc.split_arrays(args.data_dir, 3000, 0, "x_test")
    title = f"MNIST-C ({args.params} parameters): {DIGITS} test digits per cell"
    draw(grid_rows(x_test, args.params), np.hstack(list(x_test[:DIGITS])), title, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
