"""Fixtures shared by the tent test modules (imported by them; this module has no tests itself)."""
import pytest

from tent import conf, conf_load, mnistc


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
    conf_load.remove_log_handlers()


# the tiny offline-benchmark config the evaluation tests share (500 training digits, 40 test images)
TINY_MNIST_CFG = """MODEL:
  ARCH: MnistCNN
  ADAPTATIONS: [source, norm, tent]
TEST:
  BATCH_SIZE: 20
CORRUPTION:
  DATASET: mnist
  NUM_EX: 40
  SEVERITY: [5]
  TYPE: [gaussian_noise, contrast]
OPTIM:
  LR: 1e-2
MNISTC:
  NUM_TRAIN: 500
  WIDTH: 4
  EPOCHS: 1
  BATCH_SIZE: 100
"""
