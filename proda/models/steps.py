"""The four training steps of ProDA's trainer, one per stage, in the order of the paper.

  * `step_adv` (warm-up): source cross entropy + adversarial alignment of the target softmax
    through `FCDiscriminator`, then one discriminator update;
  * `step_source` (src_only): the warm-up step without the discriminator;
  * `step` (stage 1): prototypical pseudo-label denoising -- soft pseudo labels rectified by each
    pixel's softmax over negative distances to the class prototypes, computed on the EMA
    network's features of the full image mapped onto the weak view -- plus target structure
    learning: the strong view's prototype assignment must match the EMA weak view's, moved onto
    the strong view; then the moving-average prototypes and the EMA update;
  * `step_distillation` (stages 2-3): hard pseudo labels on the strong view, optionally with
    knowledge distillation from the frozen previous-stage teacher.

`StageSteps` is a part of `CustomModel` (models/adaptation_modelv2.py), which builds the state
the steps use: BaseNet / BaseNet_DP, BaseNet_ema, teacher, net_D / net_D_DP, BaseOpti,
optimizer_D, bceloss, prototypes, opt.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from proda.data.replay import full_to_weak, strong_labels, strong_transform
from proda.models.ema import update_ema
from proda.models.losses import cross_entropy2d, distillation_loss, prototype_consistency, rce, regular_loss
from proda.models.prototypes import rectification_weights, rectify_pseudo_labels
from proda.utils import IGNORE_INDEX


def quarter_hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """N x H x W hard pseudo labels at 1/4 resolution (nearest), N x 1 x h x w."""
    return F.interpolate(labels.unsqueeze(1).float(), scale_factor=0.25).long()


def resize_outputs(out: Dict[str, torch.Tensor], size: Sequence[int]) -> Dict[str, torch.Tensor]:
    """Bilinearly resize a network output dict's 'out' and 'feat' to `size` (align_corners=True)."""
    return {k: F.interpolate(out[k], size=size, mode="bilinear", align_corners=True) for k in ("out", "feat")}


class StageSteps:
    """CustomModel's steps (see the module docstring for the state they use)."""

    opt: Any

    # ------------------------------------------------------------------ source losses

    def _source_ce(self, source_x: torch.Tensor, source_label: torch.Tensor):
        """Cross entropy of the student's logits, upsampled to the source image; returns (loss, upsampled logits)."""
        source_out = self.BaseNet_DP(source_x, ssl=True)
        source_outputUp = F.interpolate(source_out["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return cross_entropy2d(input=source_outputUp, target=source_label), source_outputUp

    def _source_loss(self, source_x: torch.Tensor, source_label: torch.Tensor,
                     source_imageS: Optional[torch.Tensor], source_params: Optional[Dict[str, Any]]):
        """Source CE, on the strong view with labels moved there when S_pseudo_src > 0; returns (loss, upsampled logits)."""
        if self.opt.S_pseudo_src <= 0:
            return self._source_ce(source_x, source_label)
        source_output = self.BaseNet_DP(source_imageS)
        label_d4 = F.interpolate(source_label.unsqueeze(1).float(), size=source_output["out"].size()[2:])
        label_s = strong_labels(label_d4, source_params)
        loss = cross_entropy2d(input=source_output["out"], target=label_s.squeeze(1)) * self.opt.S_pseudo_src
        source_outputUp = F.interpolate(source_output["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return loss, source_outputUp

    def _gan_loss(self, d_out: torch.Tensor, label: int) -> torch.Tensor:
        """LS-GAN (MSE) or vanilla (BCE with logits) loss of discriminator logits against a constant label."""
        return self.bceloss(d_out, torch.full_like(d_out, float(label)))

    # ------------------------------------------------------------------ warm-up and source-only

    def step_adv(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                 source_imageS: Optional[torch.Tensor] = None,
                 source_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """Warm-up step: update G on source CE + adv * fool-D loss, then D on source vs target softmax."""
        self.net_D.requires_grad_(False)
        self.BaseOpti.zero_grad()
        loss_GTA, source_outputUp = self._source_loss(source_x, source_label, source_imageS, source_params)
        target_output = self.BaseNet_DP(target_x, ssl=True)
        target_outputUp = F.interpolate(target_output["out"], size=target_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        # the frozen D is called unwrapped: DDP would wait for gradients D does not get here
        target_D_out = self.net_D(F.softmax(target_outputUp, dim=1))
        loss_adv_G = self._gan_loss(target_D_out, self.adv_source_label) * self.opt.adv
        loss_G = loss_adv_G + loss_GTA
        loss_G.backward()
        self.BaseOpti.step()

        self.net_D.requires_grad_(True)
        self.optimizer_D.zero_grad()
        source_D_out = self.net_D_DP(F.softmax(source_outputUp.detach(), dim=1))
        target_D_out = self.net_D_DP(F.softmax(target_outputUp.detach(), dim=1))
        loss_D = (self._gan_loss(source_D_out, self.adv_source_label) +
                  self._gan_loss(target_D_out, self.adv_target_label))
        loss_D.backward()
        self.optimizer_D.step()
        return loss_GTA.item(), loss_adv_G.item(), loss_D.item()

    def step_source(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: Optional[torch.Tensor] = None,
                    source_imageS: Optional[torch.Tensor] = None,
                    source_params: Optional[Dict[str, Any]] = None) -> float:
        """Source-only step (the seed's src_only stage): step_adv without the discriminator; returns loss_GTA."""
        self.BaseOpti.zero_grad()
        loss_GTA, _ = self._source_loss(source_x, source_label, source_imageS, source_params)
        loss_GTA.backward()
        self.BaseOpti.step()
        return loss_GTA.item()

    # ------------------------------------------------------------------ stage 1

    def step(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
             target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
             target_lp: Optional[torch.Tensor] = None, target_lpsoft: Optional[torch.Tensor] = None,
             target_image_full: Optional[torch.Tensor] = None,
             target_weak_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """Stage 1: source CE; denoised pseudo-label CE (+ SCE, regulariser); prototype consistency; prototypes; EMA."""
        opt = self.opt
        loss_GTA, _ = self._source_ce(source_x, source_label)
        loss_GTA.backward()

        if opt.proto_rectify:  # soft labels at 1/4 resolution
            pseudo = F.interpolate(target_lpsoft, scale_factor=0.25, mode="bilinear", align_corners=True)
        else:
            pseudo = quarter_hard_labels(target_lp)
        ema_out = self._ema_outputs(target_image_full) if opt.ema else None
        target_out = self.BaseNet_DP(target_imageS) if opt.S_pseudo > 0 else self.BaseNet_DP(target_x)
        target_out = resize_outputs(target_out, pseudo.shape[2:])

        ema2weak_distance = None  # computed once: the reference computes it twice, identically
        if opt.proto_rectify or opt.proto_consistW > 0:
            ema2weak_distance = self.prototypes.distance(full_to_weak(ema_out["feat"], target_weak_params))
        if opt.proto_rectify:  # denoise: weight the soft pseudo label by prototype proximity
            weights = rectification_weights(ema2weak_distance, opt.proto_temperature)
            pseudo = rectify_pseudo_labels(pseudo, weights, opt.train_thred)
        if opt.S_pseudo > 0:
            pseudo = strong_labels(pseudo, target_params)

        loss_CTS = self._pseudo_label_loss(target_out["out"], pseudo)
        if opt.regular_w > 0:
            loss_CTS = loss_CTS + regular_loss(target_out["out"], opt.regular_type) * opt.regular_w
        loss = torch.zeros(1, device=source_x.device)
        loss_consist = torch.zeros(1, device=source_x.device)
        if opt.proto_consistW > 0:  # target structure learning
            loss_consist = self._proto_consistency(ema2weak_distance, target_out, target_imageS, target_params,
                                                   pseudo.shape[2:])
            loss = loss + opt.proto_consistW * loss_consist
        loss = loss + loss_CTS
        loss.backward()
        self.BaseOpti.step()
        self.BaseOpti.zero_grad()

        if opt.moving_prototype:
            vectors, ids = self.prototypes.class_means(ema_out["feat"].detach(), ema_out["out"].detach())
            self.prototypes.update(vectors, ids, opt.proto_momentum, start_mean=False)
        if opt.ema:
            update_ema(self.BaseNet, self.BaseNet_ema)
        return loss.item(), loss_CTS.item(), loss_consist.item()

    def _ema_outputs(self, target_image_full: torch.Tensor) -> Dict[str, torch.Tensor]:
        """EMA network on the full target image, its feat and logits resized to 1/4 of the image."""
        with torch.no_grad():
            ema_out = self.BaseNet_ema(target_image_full)
        return resize_outputs(ema_out, (int(target_image_full.shape[2] / 4), int(target_image_full.shape[3] / 4)))

    def _pseudo_label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE against N x 1 x h x w pseudo labels; with --rce the symmetric CE alpha * CE + beta * RCE."""
        labels = labels.reshape([labels.shape[0], labels.shape[2], labels.shape[3]])
        loss = cross_entropy2d(input=logits, target=labels)
        if self.opt.rce:
            loss = self.opt.rce_alpha * loss + self.opt.rce_beta * rce(logits, labels, self.class_numbers)
        return loss

    def _proto_consistency(self, ema2weak_distance: torch.Tensor, target_out: Dict[str, torch.Tensor],
                           target_imageS: torch.Tensor, target_params: Dict[str, Any],
                           size: Sequence[int]) -> torch.Tensor:
        """KL(soft prototype assignment of the EMA weak view moved to the strong view || the strong view's)."""
        ema2strong_distance = strong_transform(ema2weak_distance, target_params, padding=IGNORE_INDEX, scale=4)
        targetS_out = target_out if self.opt.S_pseudo > 0 else self.BaseNet_DP(target_imageS)
        strong_distance = self.prototypes.distance(resize_outputs(targetS_out, size)["feat"])
        return prototype_consistency(ema2strong_distance, strong_distance, self.opt.proto_temperature)

    # ------------------------------------------------------------------ stages 2-3

    def step_distillation(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                          target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
                          target_lp: Optional[torch.Tensor] = None) -> Tuple[float, float]:
        """Stages 2-3: source CE; hard pseudo-label CE (+ SCE) on the strong view; optional KD from the teacher."""
        opt = self.opt
        loss_GTA, _ = self._source_ce(source_x, source_label)
        loss_GTA.backward()

        pseudo = quarter_hard_labels(target_lp)
        if opt.S_pseudo > 0:
            pseudo = strong_labels(pseudo, target_params)
        target_out = self.BaseNet_DP(target_imageS) if opt.S_pseudo > 0 else self.BaseNet_DP(target_x)
        target_logits = F.interpolate(target_out["out"], size=pseudo.shape[2:], mode="bilinear", align_corners=True)
        loss = self._pseudo_label_loss(target_logits, pseudo)
        if opt.distillation > 0:
            loss = loss + opt.distillation * self._distillation_loss(target_logits, target_imageS, pseudo.shape[2:])
        loss.backward()
        self.BaseOpti.step()
        self.BaseOpti.zero_grad()
        return loss_GTA.item(), loss.item()

    def _distillation_loss(self, student_logits: torch.Tensor, target_imageS: torch.Tensor,
                           size: Sequence[int]) -> torch.Tensor:
        """KL from the frozen teacher's softmax on the strong view to the student's (see losses.distillation_loss)."""
        with torch.no_grad():
            teacher_logits = F.interpolate(self.teacher(target_imageS)["out"], size=size, mode="bilinear",
                                           align_corners=True)
        return distillation_loss(student_logits, teacher_logits, log_softmax=self.opt.kd_log_softmax)
