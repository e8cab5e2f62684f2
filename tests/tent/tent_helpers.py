"""Constants shared by the tent test modules (fixtures live in conftest.py)."""

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
