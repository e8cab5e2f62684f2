"""Fixtures of the tent tests: a generated MNIST split and a config reset around each test."""
import pytest

from tent import conf, launch, mnistc


@pytest.fixture(scope="module")
def mnist_data_dir(tmp_path_factory) -> str:
    """A DATA_DIR holding the MNIST split with 500 training images (built once per module)."""
    data_dir = str(tmp_path_factory.mktemp("mnistc"))
    mnistc.load_split(data_dir, 500, 0)
    return data_dir


@pytest.fixture()
def fresh_cfg():
    """The global config starts from its defaults, and no logging handlers of ours are left behind."""
    conf.reset_cfg()
    yield conf.cfg
    conf.reset_cfg()
    launch.remove_log_handlers()
