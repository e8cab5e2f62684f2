"""Launcher for the corruption benchmark, as in the reference repository's root:

    python cifar10c.py --cfg cfgs/tent.yaml [KEY VALUE ...]

The code lives in tent/cifar10c.py (also runnable as `python -m tent.cifar10c`).
"""
import sys

from tent.cifar10c import main

if __name__ == "__main__":
    sys.exit(main())
