"""The four training steps of ProDA's trainer, one per stage, in the order of the paper.

  * `warm_up_step` (warm-up): source cross entropy + adversarial alignment of the target softmax
    through `FCDiscriminator`, then one discriminator update;
  * `source_only_step` (src_only): the warm-up step without the discriminator;
  * `stage1_step` (stage 1): prototypical pseudo-label denoising -- soft pseudo labels rectified
    by each pixel's softmax over negative distances to the class prototypes, computed on the EMA
    network's features of the full image mapped onto the weak view -- plus target structure
    learning: the strong view's prototype assignment must match the EMA weak view's, moved onto
    the strong view; then the moving-average prototypes and the EMA update;
  * `distillation_step` (stages 2-3): hard pseudo labels on the strong view, optionally with
    knowledge distillation from the frozen previous-stage teacher.

`STAGE_STEPS` maps --stage to its step; each takes the source and target batch dicts as the
loaders yield them and returns its losses by name (`model.stage_step(source, target)`). The
reference's positional forms -- `step_adv`, `step_source`, `step`, `step_distillation` -- are
thin wrappers over them, at the end of the class.

`StageSteps` is a part of `CustomModel` (models/adaptation_modelv2.py), which builds the state
the steps use: BaseNet / BaseNet_DP, BaseNet_ema, teacher, net_D / net_D_DP, BaseOpti,
optimizer_D, bceloss, prototypes, precision, opt.

Every step runs its batch as --accum_steps micro-batches (models/accumulation.py: each loss
weighted by its share of the batch's labelled pixels or images, one optimiser step) and its
network forwards under --amp (models/precision.py). With the defaults (1 micro-batch, amp off)
each step performs exactly the reference's operations.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from proda.data.replay import full_to_weak, strong_labels, strong_transform
from proda.models.accumulation import combine, image_shares, labelled_pixels, shares, split_batch, weighted
from proda.models.ema import update_ema
from proda.models.losses import cross_entropy2d, distillation_loss, prototype_consistency, rce, regular_loss
from proda.models.prototypes import rectification_weights, rectify_pseudo_labels
from proda.utils import IGNORE_INDEX

Batch = Dict[str, Any]  # a collated loader batch: img, label, img_strong, params, lp, lpsoft, img_full, weak_params


def quarter_hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """N x H x W hard pseudo labels at 1/4 resolution (nearest), N x 1 x h x w."""
    return F.interpolate(labels.unsqueeze(1).float(), scale_factor=0.25).long()


def resize_outputs(out: Dict[str, torch.Tensor], size: Sequence[int]) -> Dict[str, torch.Tensor]:
    """Bilinearly resize a network output dict's 'out' and 'feat' to `size` (align_corners=True)."""
    return {k: F.interpolate(out[k], size=size, mode="bilinear", align_corners=True) for k in ("out", "feat")}


class StageSteps:
    """CustomModel's steps (see the module docstring for the state they use)."""

    opt: Any

    # ------------------------------------------------------------------ precision and accumulation

    def _net(self, net: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        """A network forward under --amp (its output in float32)."""
        return self.precision.forward(net, *args, **kwargs)

    def _backward(self, loss: Optional[torch.Tensor], optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """loss.backward() (scaled under --amp fp16); nothing for a micro-batch without weight."""
        if loss is not None:
            self.precision.backward(loss, optimizer or self.BaseOpti)

    def _micro(self, *batches: Any) -> List[Tuple[Any, ...]]:
        """The step's inputs cut into --accum_steps micro-batches, one tuple per micro-batch."""
        k = getattr(self.opt, "accum_steps", 1)  # an options namespace from before the option: 1
        return list(zip(*(split_batch(b, k) for b in batches)))

    # ------------------------------------------------------------------ the stage's step

    def stage_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """One optimisation step of --stage (STAGE_STEPS) on a source and a target batch; its losses by name."""
        return STAGE_STEPS[self.opt.stage](self, source, target)

    def _inputs(self, batch: Batch, *keys: str) -> List[Any]:
        """The batch's values of `keys`, tensors on the model's device (None for a key the batch lacks)."""
        values = [batch.get(key) for key in keys]
        return [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in values]

    # ------------------------------------------------------------------ source losses

    def _source_ce(self, source_x: torch.Tensor, source_label: torch.Tensor):
        """CE of the student's logits upsampled to the source image; returns (loss, upsampled logits, label size)."""
        source_out = self._net(self.BaseNet_DP, source_x, ssl=True)
        source_outputUp = F.interpolate(source_out["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return cross_entropy2d(input=source_outputUp, target=source_label), source_outputUp, source_x.shape[2:]

    def _source_targets(self, source_label: torch.Tensor, size: Sequence[int],
                        source_params: Dict[str, Any]) -> torch.Tensor:
        """S_pseudo_src > 0: the source labels at the logits' size, moved onto the strong view."""
        label_d4 = F.interpolate(source_label.unsqueeze(1).float(), size=size)
        return strong_labels(label_d4, source_params).squeeze(1)

    def _source_loss(self, source_x: torch.Tensor, source_label: torch.Tensor,
                     source_imageS: Optional[torch.Tensor], source_params: Optional[Dict[str, Any]]):
        """Source CE (on the strong view, labels moved there, when S_pseudo_src > 0); returns (loss, upsampled, size)."""
        if self.opt.S_pseudo_src <= 0:
            return self._source_ce(source_x, source_label)
        source_output = self._net(self.BaseNet_DP, source_imageS)
        size = source_output["out"].size()[2:]
        label_s = self._source_targets(source_label, size, source_params)
        loss = cross_entropy2d(input=source_output["out"], target=label_s) * self.opt.S_pseudo_src
        source_outputUp = F.interpolate(source_output["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return loss, source_outputUp, size

    def _source_shares(self, labels: Sequence[torch.Tensor], params: Sequence[Any], size: Sequence[int],
                       strong_view: bool) -> List[float]:
        """Each micro-batch's share of the labelled source pixels its loss averages over."""
        if len(labels) == 1:
            return [1.0]
        if strong_view and self.opt.S_pseudo_src > 0:
            labels = [self._source_targets(y, size, p) for y, p in zip(labels, params)]
        return shares([labelled_pixels(y) for y in labels])

    def _source_backward(self, source_x: torch.Tensor, source_label: torch.Tensor,
                         source_imageS: Optional[torch.Tensor] = None, source_params: Optional[Dict[str, Any]] = None,
                         strong_view: bool = False) -> torch.Tensor:
        """The source loss of every micro-batch, backward with its labelled-pixel share; returns the batch's loss."""
        micro = self._micro(source_x, source_label, source_imageS, source_params)
        weights, total = None, None
        for i, (x, y, x_strong, p) in enumerate(micro):
            loss, _, size = self._source_loss(x, y, x_strong, p) if strong_view else self._source_ce(x, y)
            if weights is None:  # the logits' size is known from the first micro-batch
                weights = self._source_shares([m[1] for m in micro], [m[3] for m in micro], size, strong_view)
            self._backward(weighted(loss, weights[i]))
            total = combine(total, weighted(loss.detach(), weights[i]))
        return total

    def _gan_loss(self, d_out: torch.Tensor, label: int) -> torch.Tensor:
        """LS-GAN (MSE) or vanilla (BCE with logits) loss of discriminator logits against a constant label."""
        return self.bceloss(d_out, torch.full_like(d_out, float(label)))

    # ------------------------------------------------------------------ warm-up and source-only

    def warm_up_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Warm-up step: update G on source CE + adv * fool-D loss, then D on source vs target softmax."""
        source_x, source_label, source_imageS, source_params = self._inputs(source, "img", "label", "img_strong",
                                                                            "params")
        (target_x,) = self._inputs(target, "img")
        self.net_D.requires_grad_(False)
        self.BaseOpti.zero_grad()
        micro = self._micro(source_x, source_label, target_x, source_imageS, source_params)
        images = image_shares([m[2] for m in micro])
        src_shares, softmaxes, loss_GTA, loss_adv_G = None, [], None, None
        for i, (x, y, t, x_strong, p) in enumerate(micro):
            loss_src, source_outputUp, size = self._source_loss(x, y, x_strong, p)
            if src_shares is None:
                src_shares = self._source_shares([m[1] for m in micro], [m[4] for m in micro], size, True)
            target_output = self._net(self.BaseNet_DP, t, ssl=True)
            target_outputUp = F.interpolate(target_output["out"], size=t.size()[2:], mode="bilinear",
                                            align_corners=True)
            # the frozen D is called unwrapped: DDP would wait for gradients D does not get here
            target_D_out = self._net(self.net_D, F.softmax(target_outputUp, dim=1))
            loss_adv = self._gan_loss(target_D_out, self.adv_source_label) * self.opt.adv
            self._backward(combine(weighted(loss_adv, images[i]), weighted(loss_src, src_shares[i])))
            loss_GTA = combine(loss_GTA, weighted(loss_src.detach(), src_shares[i]))
            loss_adv_G = combine(loss_adv_G, weighted(loss_adv.detach(), images[i]))
            softmaxes.append((source_outputUp.detach(), target_outputUp.detach()))
        self.precision.step(self.BaseOpti)
        loss_D = self._discriminator_step(softmaxes, images)
        return {"loss_GTA": loss_GTA.item(), "loss_G": loss_adv_G.item(), "loss_D": loss_D.item()}

    def _discriminator_step(self, softmaxes: List[Tuple[torch.Tensor, torch.Tensor]],
                            images: List[float]) -> torch.Tensor:
        """Update D on the (source, target) logits of each micro-batch: source is 0, target 1; returns loss_D."""
        self.net_D.requires_grad_(True)
        self.optimizer_D.zero_grad()
        loss_D = None
        for (source_outputUp, target_outputUp), share in zip(softmaxes, images):
            source_D_out = self._net(self.net_D_DP, F.softmax(source_outputUp, dim=1))
            target_D_out = self._net(self.net_D_DP, F.softmax(target_outputUp, dim=1))
            loss = (self._gan_loss(source_D_out, self.adv_source_label) +
                    self._gan_loss(target_D_out, self.adv_target_label))
            self._backward(weighted(loss, share), self.optimizer_D)
            loss_D = combine(loss_D, weighted(loss.detach(), share))
        self.precision.step(self.optimizer_D)
        return loss_D

    def source_only_step(self, source: Batch, target: Optional[Batch] = None) -> Dict[str, float]:
        """Source-only step (the seed's src_only stage): the warm-up step without the discriminator."""
        self.BaseOpti.zero_grad()
        loss_GTA = self._source_backward(*self._inputs(source, "img", "label", "img_strong", "params"),
                                         strong_view=True)
        self.precision.step(self.BaseOpti)
        return {"loss_GTA": loss_GTA.item()}

    # ------------------------------------------------------------------ stage 1

    def stage1_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Stage 1: source CE; denoised pseudo-label CE (+ SCE, regulariser); prototype consistency; prototypes; EMA."""
        opt = self.opt
        source_x, source_label = self._inputs(source, "img", "label")
        self._source_backward(source_x, source_label)
        micro = self._micro(*self._inputs(target, "img", "img_strong", "params", "lp", "lpsoft", "img_full",
                                          "weak_params"))
        targets = [self._stage1_targets(*m) for m in micro]  # the EMA network is the same for all
        ce_shares = self._label_shares([t["pseudo"] for t in targets])
        consist_shares = (self._label_shares([t["ema2strong"] for t in targets])
                          if opt.proto_consistW > 0 else None)
        images = image_shares([m[0] for m in micro])
        totals = [None, None, None]
        for i, ((x, x_strong, params, *_), target) in enumerate(zip(micro, targets)):
            target_out = self._net(self.BaseNet_DP, x_strong) if opt.S_pseudo > 0 else self._net(self.BaseNet_DP, x)
            target_out = resize_outputs(target_out, target["pseudo"].shape[2:])
            loss_CTS = weighted(self._pseudo_label_loss(target_out["out"], target["pseudo"]), ce_shares[i])
            if opt.regular_w > 0:
                loss_CTS = combine(loss_CTS, weighted(regular_loss(target_out["out"], opt.regular_type) * opt.regular_w,
                                                      images[i]))
            loss = torch.zeros(1, device=source_x.device)
            loss_consist = torch.zeros(1, device=source_x.device)
            if opt.proto_consistW > 0:  # target structure learning
                loss_consist = weighted(self._proto_consistency(target["ema2strong"], target_out, x_strong,
                                                                target["pseudo"].shape[2:]), consist_shares[i])
                loss = combine(loss, None if loss_consist is None else opt.proto_consistW * loss_consist)
            loss = combine(loss, loss_CTS)
            self._backward(loss)
            for j, value in enumerate((loss, loss_CTS, loss_consist)):
                totals[j] = combine(totals[j], None if value is None else value.detach())
        self.precision.step(self.BaseOpti)
        self.BaseOpti.zero_grad()

        if opt.moving_prototype:  # the reference's per-image order: micro-batch after micro-batch
            vectors, ids = self._concatenated([t["class_means"] for t in targets])
            self.prototypes.update(vectors, ids, opt.proto_momentum, start_mean=False)
        if opt.ema:
            update_ema(self.BaseNet, self.BaseNet_ema)
        return dict(zip(("loss", "loss_CTS", "loss_consist"), (total.item() for total in totals)))

    def _stage1_targets(self, target_x, target_imageS, target_params, target_lp, target_lpsoft,
                        target_image_full, target_weak_params) -> Dict[str, Any]:
        """Stage 1's targets: denoised pseudo labels, EMA distances on the strong view, EMA class means."""
        opt = self.opt
        if opt.proto_rectify:  # soft labels at 1/4 resolution
            pseudo = F.interpolate(target_lpsoft, scale_factor=0.25, mode="bilinear", align_corners=True)
        else:
            pseudo = quarter_hard_labels(target_lp)
        ema_out = self._ema_outputs(target_image_full) if opt.ema else None
        ema2weak_distance = None  # computed once: the reference computes it twice, identically
        if opt.proto_rectify or opt.proto_consistW > 0:
            ema2weak_distance = self.prototypes.distance(full_to_weak(ema_out["feat"], target_weak_params))
        if opt.proto_rectify:  # denoise: weight the soft pseudo label by prototype proximity
            weights = rectification_weights(ema2weak_distance, opt.proto_temperature)
            pseudo = rectify_pseudo_labels(pseudo, weights, opt.train_thred)
        if opt.S_pseudo > 0:
            pseudo = strong_labels(pseudo, target_params)
        ema2strong = None
        if opt.proto_consistW > 0:  # the EMA weak view's distances moved onto the strong view
            ema2strong = strong_transform(ema2weak_distance, target_params, padding=IGNORE_INDEX, scale=4)
        class_means = None
        if opt.moving_prototype:
            class_means = self.prototypes.class_means(ema_out["feat"].detach(), ema_out["out"].detach())
        return {"pseudo": pseudo, "ema2strong": ema2strong, "class_means": class_means}

    @staticmethod
    def _label_shares(labels: Sequence[torch.Tensor]) -> List[float]:
        """Each micro-batch's share of the labelled (not 250) elements a masked mean runs over."""
        if len(labels) == 1:
            return [1.0]
        return shares([labelled_pixels(y) for y in labels])

    @staticmethod
    def _concatenated(pairs: List[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(vectors, ids) of the micro-batches one after another (the whole batch's image-major order)."""
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([v for v, _ in pairs]), torch.cat([i for _, i in pairs])

    def _ema_outputs(self, target_image_full: torch.Tensor) -> Dict[str, torch.Tensor]:
        """EMA network on the full target image, its feat and logits resized to 1/4 of the image."""
        with torch.no_grad():
            ema_out = self._net(self.BaseNet_ema, target_image_full)
        return resize_outputs(ema_out, (int(target_image_full.shape[2] / 4), int(target_image_full.shape[3] / 4)))

    def _pseudo_label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE against N x 1 x h x w pseudo labels; with --rce the symmetric CE alpha * CE + beta * RCE."""
        labels = labels.reshape([labels.shape[0], labels.shape[2], labels.shape[3]])
        loss = cross_entropy2d(input=logits, target=labels)
        if self.opt.rce:
            loss = self.opt.rce_alpha * loss + self.opt.rce_beta * rce(logits, labels, self.class_numbers)
        return loss

    def _proto_consistency(self, ema2strong_distance: torch.Tensor, target_out: Dict[str, torch.Tensor],
                           target_imageS: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """KL(soft prototype assignment of the EMA weak view moved to the strong view || the strong view's)."""
        targetS_out = target_out if self.opt.S_pseudo > 0 else self._net(self.BaseNet_DP, target_imageS)
        strong_distance = self.prototypes.distance(resize_outputs(targetS_out, size)["feat"])
        return prototype_consistency(ema2strong_distance, strong_distance, self.opt.proto_temperature)

    # ------------------------------------------------------------------ stages 2-3

    def distillation_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Stages 2-3: source CE; hard pseudo-label CE (+ SCE) on the strong view; optional KD from the teacher."""
        opt = self.opt
        loss_GTA = self._source_backward(*self._inputs(source, "img", "label"))
        micro = self._micro(*self._inputs(target, "img", "img_strong", "params", "lp"))
        pseudos = [quarter_hard_labels(lp) for *_, lp in micro]
        if opt.S_pseudo > 0:
            pseudos = [strong_labels(pseudo, params) for pseudo, (_, _, params, _) in zip(pseudos, micro)]
        ce_shares = self._label_shares(pseudos)
        images = image_shares([m[0] for m in micro])
        total = None
        for i, ((x, x_strong, _, _), pseudo) in enumerate(zip(micro, pseudos)):
            target_out = self._net(self.BaseNet_DP, x_strong) if opt.S_pseudo > 0 else self._net(self.BaseNet_DP, x)
            target_logits = F.interpolate(target_out["out"], size=pseudo.shape[2:], mode="bilinear",
                                          align_corners=True)
            loss = weighted(self._pseudo_label_loss(target_logits, pseudo), ce_shares[i])
            if opt.distillation > 0:
                loss = combine(loss, weighted(opt.distillation * self._distillation_loss(
                    target_logits, x_strong, pseudo.shape[2:]), images[i]))
            self._backward(loss)
            total = combine(total, None if loss is None else loss.detach())
        self.precision.step(self.BaseOpti)
        self.BaseOpti.zero_grad()
        return {"loss_GTA": loss_GTA.item(), "loss": total.item()}

    def _distillation_loss(self, student_logits: torch.Tensor, target_imageS: torch.Tensor,
                           size: Sequence[int]) -> torch.Tensor:
        """KL from the frozen teacher's softmax on the strong view to the student's (see losses.distillation_loss)."""
        with torch.no_grad():
            teacher_logits = F.interpolate(self._net(self.teacher, target_imageS)["out"], size=size, mode="bilinear",
                                           align_corners=True)
        return distillation_loss(student_logits, teacher_logits, log_softmax=self.opt.kd_log_softmax)

    # ------------------------------------------------------------------ the reference's positional forms

    def step_adv(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                 source_imageS: Optional[torch.Tensor] = None,
                 source_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """warm_up_step on positional tensors; returns (loss_GTA, loss_G, loss_D)."""
        losses = self.warm_up_step({"img": source_x, "label": source_label, "img_strong": source_imageS,
                                    "params": source_params}, {"img": target_x})
        return losses["loss_GTA"], losses["loss_G"], losses["loss_D"]

    def step_source(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: Optional[torch.Tensor] = None,
                    source_imageS: Optional[torch.Tensor] = None,
                    source_params: Optional[Dict[str, Any]] = None) -> float:
        """source_only_step on positional tensors; returns loss_GTA."""
        return self.source_only_step({"img": source_x, "label": source_label, "img_strong": source_imageS,
                                      "params": source_params})["loss_GTA"]

    def step(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
             target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
             target_lp: Optional[torch.Tensor] = None, target_lpsoft: Optional[torch.Tensor] = None,
             target_image_full: Optional[torch.Tensor] = None,
             target_weak_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """stage1_step on positional tensors; returns (loss, loss_CTS, loss_consist)."""
        losses = self.stage1_step({"img": source_x, "label": source_label},
                                  {"img": target_x, "img_strong": target_imageS, "params": target_params,
                                   "lp": target_lp, "lpsoft": target_lpsoft, "img_full": target_image_full,
                                   "weak_params": target_weak_params})
        return losses["loss"], losses["loss_CTS"], losses["loss_consist"]

    def step_distillation(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                          target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
                          target_lp: Optional[torch.Tensor] = None) -> Tuple[float, float]:
        """distillation_step on positional tensors; returns (loss_GTA, loss)."""
        losses = self.distillation_step({"img": source_x, "label": source_label},
                                        {"img": target_x, "img_strong": target_imageS, "params": target_params,
                                         "lp": target_lp})
        return losses["loss_GTA"], losses["loss"]


# --stage -> its step; each takes the source and target batch dicts (as the loaders yield them)
# and returns the losses by name. Stage 3 is stage 2 again, from the stage-2 model.
STAGE_STEPS: Dict[str, Callable[[StageSteps, Batch, Batch], Dict[str, float]]] = {
    "warm_up": StageSteps.warm_up_step,
    "src_only": StageSteps.source_only_step,
    "stage1": StageSteps.stage1_step,
    "stage2": StageSteps.distillation_step,
    "stage3": StageSteps.distillation_step,
}
