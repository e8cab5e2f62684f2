"""Single-sample adaptation on a sliding window (mariodoebler/test-time-adaptation, TEST.WINDOW_LENGTH).

With TEST.BATCH_SIZE 1, batch norm in train mode normalises each channel over the H x W positions
of the one image (an instance norm with the source affine): it runs for convolutional layers, but
the statistics of one image are poor, and a layer whose input is 1 x 1 (or BatchNorm1d) fails
("Expected more than 1 value per channel"). The window keeps the last `length` samples: each new
sample is predicted from a forward of the whole window (batch statistics over up to `length`
images, no update), and once every `length` samples the wrapped method adapts on the full window.
As mariodoebler's `TTAMethod.forward`: the window and its position outlive every reset, the
`BatchNorm1d` layers run in eval mode while the window holds one sample, and a network without
batch norm forwards the new sample alone.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class SlidingWindow(nn.Module):
    """Wrap a norm / tent model so single samples are adapted on a window of the last ones."""

    def __init__(self, model: nn.Module, length: int) -> None:
        super().__init__()
        self.model = model  # the Norm or Tent wrapper (or a PeriodicReset of one); .model is the network
        self.length = length
        self.buffer: Optional[torch.Tensor] = None
        self.pointer = 0
        network = model.model
        self.has_bn = any(isinstance(m, BATCH_NORMS) for m in network.modules())
        # the BatchNorm1d layers the method adapts: one sample has no batch statistics for them
        self.bn1d: List[nn.Module] = [m for m in network.modules() if isinstance(m, nn.BatchNorm1d) and m.training]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction for one sample (batch of 1); adapts when the window has been refilled."""
        if self.buffer is None:
            self.buffer = x.clone()
            self.set_bn1d(False)
        elif self.buffer.shape[0] < self.length:
            self.buffer = torch.cat([self.buffer, x])
            self.set_bn1d(True)
        else:
            self.buffer[self.pointer] = x[0]
        if self.pointer == self.length - 1:
            outputs = self.model(self.buffer)[self.pointer:self.pointer + 1]  # the method's adapting forward
        elif self.has_bn:
            with torch.no_grad():  # batch statistics of the window, no update
                outputs = self.model.model(self.buffer)[self.pointer:self.pointer + 1]
        else:
            with torch.no_grad():  # no batch norm: the other samples cannot change this one's output
                outputs = self.model.model(x)
        self.pointer = (self.pointer + 1) % self.length
        return outputs

    def set_bn1d(self, train: bool) -> None:
        """Train (batch statistics) or eval (source statistics) mode for the adapted BatchNorm1d layers."""
        for m in self.bn1d:
            m.train(train)

    def reset(self) -> None:
        """Reset the wrapped method; the window keeps its samples and position (as mariodoebler's)."""
        self.model.reset()
