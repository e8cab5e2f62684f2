"""ProDA's networks and trainer: DeepLabv2 (ResNet-101), the warm-up discriminator, CustomModel,
and build_student (the student network alone, for inference). Map: docs/code-map.md."""
from proda.models.adaptation_modelv2 import CustomModel
from proda.models.builders import build_student
from proda.models.deeplabv2 import Deeplab, ResNet101
from proda.models.discriminator import FCDiscriminator

__all__ = ["CustomModel", "build_student", "Deeplab", "ResNet101", "FCDiscriminator"]
