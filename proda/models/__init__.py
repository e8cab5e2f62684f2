"""ProDA's networks and trainer: DeepLabv2 (ResNet-101), the warm-up discriminator, and CustomModel."""
from proda.models.adaptation_modelv2 import CustomModel
from proda.models.deeplabv2 import Deeplab, ResNet101
from proda.models.discriminator import FCDiscriminator

__all__ = ["CustomModel", "Deeplab", "ResNet101", "FCDiscriminator"]
