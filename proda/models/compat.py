"""Compatibility: the reference trainer's names, for the reference's callers and api.md.

Everything here is a second name for something that lives elsewhere; code inside `proda/`
uses the name on the right (checkpoint files keep the reference's keys: proda/checkpoint.py).
`CustomModel` inherits these, so `model.full2weak(...)` and friends keep working. (CustomModel also accepts the reference's unused `isTrain` argument.)

| reference name | lives in |
| --- | --- |
| objective_vectors, objective_vectors_num | `model.prototypes.vectors`, `.counts` (models/prototypes.py) |
| calculate_mean_vector, update_objective_vectors, update_objective_SingleVector | `Prototypes.class_means`, `Prototypes.update` |
| feat_prototype_distance, get_prototype_weight | `Prototypes.distance`, `rectification_weights` |
| process_label | `one_hot_labels` (models/prototypes.py) |
| full2weak, label_strong_T | `full_to_weak`, `strong_transform` (data/replay.py) |
| rce, regular_loss | `losses.rce`, `losses.regular_loss` (models/losses.py) |
| BaseNet_ema_DP, teacher_DP | `BaseNet_ema`, `teacher` (never DDP-wrapped: they get no gradients) |
| step_adv, step_source, step, step_distillation (positional tensors) | `warm_up_step`, `source_only_step`, `stage1_step`, `distillation_step` (batch dicts; models/steps.py) |
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from proda.data.replay import full_to_weak, strong_transform
from proda.models import losses
from proda.models.prototypes import one_hot_labels, rectification_weights


class ReferenceNames:
    """The reference's method and attribute names of CustomModel, as thin forwards."""

    prototypes: Any
    opt: Any

    @property
    def objective_vectors(self) -> torch.Tensor:
        """The class prototypes, n_class x 256, on the model's device (float32; any input is converted)."""
        return self.prototypes.vectors

    @objective_vectors.setter
    def objective_vectors(self, value: Any) -> None:
        self.prototypes.vectors = value

    @property
    def objective_vectors_num(self) -> torch.Tensor:
        """How many vectors each prototype has seen (capped at 3000)."""
        return self.prototypes.counts

    @objective_vectors_num.setter
    def objective_vectors_num(self, value: torch.Tensor) -> None:
        self.prototypes.counts = value

    @property
    def BaseNet_ema_DP(self) -> nn.Module:
        """The EMA network (the reference's DataParallel name)."""
        return self.BaseNet_ema

    @property
    def teacher_DP(self) -> nn.Module:
        """The frozen teacher (the reference's DataParallel name)."""
        return self.teacher

    def calculate_mean_vector(self, feat_cls: torch.Tensor, outputs: torch.Tensor,
                              labels: Optional[torch.Tensor] = None,
                              thresh: Optional[float] = None) -> Tuple[torch.Tensor, List[int]]:
        """Class mean features per image as the reference's lists: (vectors M x C x 1 x 1, ids)."""
        vectors, ids = self.prototypes.class_means(feat_cls, outputs, labels, thresh)
        return vectors[:, :, None, None], ids.tolist()

    def update_objective_vectors(self, vectors: Any, ids: Any, name: str = "moving_average",
                                 start_mean: bool = True) -> None:
        """Update the prototypes with a batch of (id, vector) pairs, gathered from every process."""
        self.prototypes.update(vectors, ids, self.opt.proto_momentum, name=name, start_mean=start_mean)

    def update_objective_SingleVector(self, id: int, vector: Any, name: str = "moving_average",
                                      start_mean: bool = True) -> None:
        """The reference's one-vector update (this process only)."""
        self.prototypes.update([vector], [id], self.opt.proto_momentum, name=name, start_mean=start_mean,
                               gather=False)

    def feat_prototype_distance(self, feat: torch.Tensor) -> torch.Tensor:
        """Distance of each pixel feature to each class prototype, N x n_class x H x W."""
        return self.prototypes.distance(feat)

    def get_prototype_weight(self, feat: torch.Tensor, label: Any = None,
                             target_weak_params: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """Pseudo-label rectification weights of full-image features, on the weak view."""
        distance = self.prototypes.distance(full_to_weak(feat, target_weak_params))
        return rectification_weights(distance, self.opt.proto_temperature)

    def full2weak(self, feat: torch.Tensor, target_weak_params: Dict[str, Any]) -> torch.Tensor:
        """Map features of the full target image onto its weak (resized, cropped, flipped) view."""
        return full_to_weak(feat, target_weak_params)

    def label_strong_T(self, label: torch.Tensor, params: Dict[str, Any], padding: float,
                       scale: int = 1) -> torch.Tensor:
        """Move weak-view maps (labels, distances) onto the strong view with the recorded RandAugment geometry."""
        return strong_transform(label, params, padding, scale)

    def process_label(self, label: torch.Tensor) -> torch.Tensor:
        """One-hot labels with an extra last channel for ignored pixels."""
        return one_hot_labels(label, self.prototypes.n_class)

    def regular_loss(self, activation: torch.Tensor) -> torch.Tensor:
        """The confidence regulariser of --regular_type."""
        return losses.regular_loss(activation, self.opt.regular_type)

    def rce(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Reverse cross entropy of symmetric CE over labelled pixels."""
        return losses.rce(pred, labels, self.prototypes.n_class)

    # ------------------------------------------------------------------ the reference's positional steps

    def step_adv(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                 source_imageS: Optional[torch.Tensor] = None,
                 source_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """warm_up_step on positional tensors: (loss_GTA, loss_G, loss_D)."""
        losses = self.warm_up_step({"img": source_x, "label": source_label, "img_strong": source_imageS,
                                    "params": source_params}, {"img": target_x})
        return losses["loss_GTA"], losses["loss_G"], losses["loss_D"]

    def step_source(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: Optional[torch.Tensor] = None,
                    source_imageS: Optional[torch.Tensor] = None,
                    source_params: Optional[Dict[str, Any]] = None) -> float:
        """source_only_step on positional tensors: loss_GTA."""
        return self.source_only_step({"img": source_x, "label": source_label, "img_strong": source_imageS,
                                      "params": source_params})["loss_GTA"]

    def step(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
             target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
             target_lp: Optional[torch.Tensor] = None, target_lpsoft: Optional[torch.Tensor] = None,
             target_image_full: Optional[torch.Tensor] = None,
             target_weak_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """stage1_step on positional tensors: (loss, loss_CTS, loss_consist), as the reference returns."""
        losses = self.stage1_step({"img": source_x, "label": source_label},
                                  {"img": target_x, "img_strong": target_imageS, "params": target_params,
                                   "lp": target_lp, "lpsoft": target_lpsoft, "img_full": target_image_full,
                                   "weak_params": target_weak_params})
        return losses["loss"], losses["loss_CTS"], losses["loss_consist"]

    def step_distillation(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                          target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
                          target_lp: Optional[torch.Tensor] = None) -> Tuple[float, float]:
        """distillation_step on positional tensors: (loss_GTA, loss)."""
        losses = self.distillation_step({"img": source_x, "label": source_label},
                                        {"img": target_x, "img_strong": target_imageS, "params": target_params,
                                         "lp": target_lp})
        return losses["loss_GTA"], losses["loss"]
