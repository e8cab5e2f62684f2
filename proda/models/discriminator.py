"""The patch discriminator of ProDA's adversarial warm-up (reference `models/discriminator.py`)."""
from __future__ import annotations

import torch
import torch.nn as nn


class FCDiscriminator(nn.Module):
    """Fully convolutional PatchGAN: class probabilities -> one source/target logit per patch.

    Four stride-2 3x3 convolutions (ReLU, then LeakyReLU 0.2 after the last) and a 1x1
    classifier, so each output logit judges a 31 x 31 patch of the softmax map.
    """

    def __init__(self, inplanes: int, planes: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(planes, planes * 2, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(planes * 2, planes * 4, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(planes * 4, planes * 8, kernel_size=3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.classifier = nn.Conv2d(planes * 8, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x inplanes x H x W probabilities -> N x 1 x H/16 x W/16 logits."""
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(x)
