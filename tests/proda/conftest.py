"""Fixtures of the ProDA tests: tiny synthetic GTA5 / Cityscapes trees and Python's Ctrl-C handler."""
import signal
from pathlib import Path
from typing import Callable, Tuple

import pytest

from proda.demo.synthetic import generate


@pytest.fixture(scope="module")
def synthetic_tree(tmp_path_factory) -> Callable[..., Path]:
    """A factory of tiny synthetic GTA5 / Cityscapes trees under one module-wide folder."""
    def make(name: str, n_source: int, n_target_train: int, n_target_val: int, size: Tuple[int, int]) -> Path:
        root = tmp_path_factory.mktemp(name)
        generate(str(root / "data"), n_source=n_source, n_target_train=n_target_train,
                 n_target_val=n_target_val, size=size, seed=0)
        return root
    return make


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler for the test: a background job inherits SIGINT ignored (SIG_IGN),
    and the held signal is delivered to whatever handler was there before."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
