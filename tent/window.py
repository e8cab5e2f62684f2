"""Single-sample adaptation on a sliding window (mariodoebler/test-time-adaptation, TEST.WINDOW_LENGTH).

With TEST.BATCH_SIZE 1, batch norm in train mode normalises each channel over the H x W positions
of the one image (an instance norm with the source affine): it runs for convolutional layers, but
the statistics of one image are poor, and a layer whose input is 1 x 1 (or BatchNorm1d) fails
("Expected more than 1 value per channel"). The window keeps the last `length` samples: each new
sample is predicted from a forward of the whole window (batch statistics over up to `length`
images, no update), and once every `length` samples the wrapped method adapts on the full window.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class SlidingWindow(nn.Module):
    """Wrap a norm / tent model so single samples are adapted on a window of the last ones."""

    def __init__(self, model: nn.Module, length: int) -> None:
        super().__init__()
        self.model = model  # the Norm or Tent wrapper; .model is the network inside it
        self.length = length
        self.buffer: Optional[torch.Tensor] = None
        self.pointer = 0
        self.updated = False  # whether the last forward adapted (for MODEL.RESET_AFTER_NUM_UPDATES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction for one sample (batch of 1); adapts when the window has been refilled."""
        if self.buffer is None:
            self.buffer = x.clone()
        elif self.buffer.shape[0] < self.length:
            self.buffer = torch.cat([self.buffer, x])
        else:
            self.buffer[self.pointer] = x[0]
        self.updated = self.pointer == self.length - 1
        if self.updated:
            outputs = self.model(self.buffer)  # the method's own adapting forward
        else:
            with torch.no_grad():
                outputs = self.model.model(self.buffer)  # batch statistics of the window, no update
        outputs = outputs[self.pointer:self.pointer + 1]
        self.pointer = (self.pointer + 1) % self.length
        return outputs

    def reset(self) -> None:
        """Reset the wrapped method and empty the window."""
        self.model.reset()
        self.buffer, self.pointer = None, 0
