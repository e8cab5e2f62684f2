"""The four training steps of ProDA's trainer, one per stage, written as the paper's loss terms.

Each stage names the loss terms of ONE micro-batch in the paper's symbols (ProDA, Zhang et
al., CVPR 2021) and hands them to `accumulate_and_step` (models/accumulation.py), which weights
each term by its micro-batch's share of the batch's labelled pixels or images, runs backward and
takes one optimiser step:

  * warm-up (`warm_up_step`): l_ce^s + lambda_adv * l_adv, the target softmax fooling
    `FCDiscriminator`; then the discriminator's step on l_D;
  * source-only (`source_only_step`): l_ce^s alone;
  * stage 1 (`stage1_step`): l_ce^s, then l_sce^t + gamma_1 * l_kl^t + gamma_2 * l_reg^t, where
    l_sce^t is the symmetric cross entropy against the pseudo labels denoised by the prototypes
    (`rectified_pseudo_labels`), l_kl^t the KL between the soft prototypical assignments of the
    EMA network's weak view and the student's strong view (target structure learning), and
    l_reg^t the confidence regulariser; then the moving-average prototypes and the EMA update;
  * stages 2-3 (`distillation_step`): l_ce^s, then l_sce^t on the hard pseudo labels plus
    beta * l_kd, the KL to the frozen previous-stage teacher (self-distillation).

`STAGE_STEPS` maps --stage to its step; each takes the source and target batch dicts as the
loaders yield them and returns the losses the reference logs, by name
(`model.stage_step(source, target)`). The source pass runs before the target pass, with its own
backward, as in the reference.

`StageSteps` is a part of `CustomModel` (models/adaptation_modelv2.py), which builds the state
the steps use: BaseNet / BaseNet_DP, BaseNet_ema, teacher, net_D / net_D_DP, BaseOpti,
optimizer_D, bceloss, prototypes, precision, opt. Network forwards run under --amp
(models/precision.py). With the defaults (1 micro-batch, amp off) each step performs exactly the
reference's operations.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from proda.data.replay import full_to_weak, strong_labels, strong_transform
from proda.models.accumulation import Pass, Term, accumulate_and_step, images, pixels, split_batch
from proda.models.ema import update_ema
from proda.models.losses import cross_entropy2d, distillation_loss, prototype_consistency, rce, regular_loss
from proda.models.prototypes import rectification_weights, rectify_pseudo_labels
from proda.utils import IGNORE_INDEX

Batch = Dict[str, Any]  # a collated loader batch: img, label, img_strong, params, lp | lpsoft, img_full, weak_params


def quarter_hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """N x H x W hard pseudo labels at 1/4 resolution (nearest), N x 1 x h x w."""
    return F.interpolate(labels.unsqueeze(1).float(), scale_factor=0.25).long()


def resize_outputs(out: Dict[str, torch.Tensor], size: Sequence[int]) -> Dict[str, torch.Tensor]:
    """Bilinearly resize a network output dict's 'out' and 'feat' to `size` (align_corners=True)."""
    return {k: F.interpolate(out[k], size=size, mode="bilinear", align_corners=True) for k in ("out", "feat")}


def upsample(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Logits bilinearly upsampled to the spatial size of the image `like` (align_corners=True)."""
    return F.interpolate(logits, size=like.size()[2:], mode="bilinear", align_corners=True)


class StageSteps:
    """CustomModel's steps (see the module docstring for the state they use)."""

    opt: Any

    # ------------------------------------------------------------------ plumbing

    def stage_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """One optimisation step of --stage (STAGE_STEPS) on a source and a target batch; its losses by name."""
        return STAGE_STEPS[self.opt.stage](self, source, target)

    def _net(self, net: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        """A network forward under --amp (its output in float32)."""
        return self.precision.forward(net, *args, **kwargs)

    def _micro_batches(self, batch: Batch, *keys: str) -> List[Batch]:
        """The batch's `keys` (tensors on the model's device, None where missing) in --accum_steps micro-batches."""
        values = {key: batch.get(key) for key in keys}
        values = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        return split_batch(values, self.opt.accum_steps)

    def _step(self, *passes: Pass, optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, float]:
        """accumulate_and_step on the segmentation network's optimiser (or `optimizer`); the logged floats."""
        logged = accumulate_and_step(optimizer or self.BaseOpti, self.precision, *passes)
        return {key: value.item() for key, value in logged.items()}

    # ------------------------------------------------------------------ l_ce^s

    def source_ce(self, source: Batch) -> Tuple[Term, torch.Tensor]:
        """l_ce^s: the student's CE on the labelled source pixels, its logits (returned too) upsampled to the image."""
        logits = upsample(self._net(self.BaseNet_DP, source["img"], ssl=True)["out"], source["img"])
        return Term(cross_entropy2d(input=logits, target=source["label"]), pixels(lambda p: p["label"])), logits

    def _source_pass(self, source: Batch, logs: Dict[str, List[str]]) -> Pass:
        """l_ce^s on the source batch (stages 1-3), before the target terms and with its own backward."""
        return Pass(self._micro_batches(source, "img", "label"), lambda part: {"l_ce^s": self.source_ce(part)[0]}, logs)

    def source_ce_strong(self, source: Batch) -> Tuple[Term, torch.Tensor]:
        """The warm-up's and source-only l_ce^s (times S_pseudo_src, on the strong view with its labels moved
        there at the logits' size, when S_pseudo_src > 0), and the source logits upsampled to the image."""
        if self.opt.S_pseudo_src <= 0:
            return self.source_ce(source)
        out = self._net(self.BaseNet_DP, source["img_strong"])["out"]
        labels = self._strong_source_labels(out.size()[2:])
        l_ce = cross_entropy2d(input=out, target=labels(source)) * self.opt.S_pseudo_src
        return Term(l_ce, pixels(labels)), upsample(out, source["img"])

    @staticmethod
    def _strong_source_labels(size: Sequence[int]) -> Callable[[Batch], torch.Tensor]:
        """A micro-batch's source labels at the logits' `size`, moved onto its strong view (250 outside)."""
        def labels(part: Batch) -> torch.Tensor:
            label_d4 = F.interpolate(part["label"].unsqueeze(1).float(), size=size)
            return strong_labels(label_d4, part["params"]).squeeze(1)
        return labels

    # ------------------------------------------------------------------ warm-up and source-only

    def _gan_loss(self, d_out: torch.Tensor, label: int) -> torch.Tensor:
        """LS-GAN (MSE) or vanilla (BCE with logits) loss of discriminator logits against a constant label."""
        return self.bceloss(d_out, torch.full_like(d_out, float(label)))

    def warm_up_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Warm-up step: G on l_ce^s + lambda_adv * l_adv (D frozen), then D on l_D."""
        sources = self._micro_batches(source, "img", "label", "img_strong", "params")
        parts = [{**s, "target": t["img"]} for s, t in zip(sources, self._micro_batches(target, "img"))]
        logits: List[Dict[str, torch.Tensor]] = []  # each micro-batch's source and target logits, for D's step

        def terms(part: Batch) -> Dict[str, Term]:
            """l_ce^s and lambda_adv * l_adv, the target softmax labelled as source for the frozen D."""
            l_ce, source_logits = self.source_ce_strong(part)
            target_logits = upsample(self._net(self.BaseNet_DP, part["target"], ssl=True)["out"], part["target"])
            # the frozen D is called unwrapped: DDP would wait for gradients D does not get here
            d_out = self._net(self.net_D, F.softmax(target_logits, dim=1))
            l_adv = self._gan_loss(d_out, self.adv_source_label) * self.opt.adv
            logits.append({"source": source_logits.detach(), "target": target_logits.detach()})
            return {"l_ce^s": l_ce, "l_adv": Term(l_adv, images(lambda p: p["target"]))}

        self.net_D.requires_grad_(False)
        losses = self._step(Pass(parts, terms, {"loss_GTA": ["l_ce^s"], "loss_G": ["l_adv"]}))
        self.net_D.requires_grad_(True)
        losses.update(self._step(Pass(logits, self.discriminator_loss, {"loss_D": ["l_D"]}),
                                 optimizer=self.optimizer_D))
        return losses

    def discriminator_loss(self, logits: Dict[str, torch.Tensor]) -> Dict[str, Term]:
        """l_D: D tells the source softmax (label 0) from the target softmax (label 1)."""
        source_d = self._net(self.net_D_DP, F.softmax(logits["source"], dim=1))
        target_d = self._net(self.net_D_DP, F.softmax(logits["target"], dim=1))
        l_d = self._gan_loss(source_d, self.adv_source_label) + self._gan_loss(target_d, self.adv_target_label)
        return {"l_D": Term(l_d, images(lambda p: p["target"]))}

    def source_only_step(self, source: Batch, target: Optional[Batch] = None) -> Dict[str, float]:
        """Source-only step (the seed's src_only stage): the warm-up's l_ce^s alone."""
        parts = self._micro_batches(source, "img", "label", "img_strong", "params")
        terms = lambda part: {"l_ce^s": self.source_ce_strong(part)[0]}  # noqa: E731
        return self._step(Pass(parts, terms, {"loss_GTA": ["l_ce^s"]}))

    # ------------------------------------------------------------------ stage 1

    def stage1_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Stage 1: l_ce^s; then l_sce^t + gamma_1 * l_kl^t + gamma_2 * l_reg^t; prototypes; EMA."""
        opt = self.opt
        micro = self._micro_batches(target, "img", "img_strong", "params", "lp", "lpsoft", "img_full", "weak_params")
        parts: List[Batch] = []

        def targets() -> List[Batch]:
            """Each micro-batch with its denoised targets, built after the source pass (the reference's order)."""
            parts.extend({**m, **self.denoised_targets(m)} for m in micro)  # the EMA network is the same for all
            return parts

        # loss_CTS is the reference's: l_sce^t plus gamma_2 * l_reg^t; loss_reg logs the latter alone as well
        logs = {"loss_CTS": ["l_sce^t", "l_reg^t"], "loss_consist": ["l_kl^t"], "loss_reg": ["l_reg^t"]}
        losses = self._step(self._source_pass(source, {}), Pass(targets, self.stage1_terms, logs, objective="loss"))
        if opt.moving_prototype:  # the reference's per-image order: micro-batch after micro-batch
            vectors, ids = self._concatenated([part["class_means"] for part in parts])
            self.prototypes.update(vectors, ids, opt.proto_momentum, start_mean=False)
        if opt.ema:
            update_ema(self.BaseNet, self.BaseNet_ema)
        losses.setdefault("loss_consist", 0.0)  # the reference logs 0 without gamma_1
        return {key: losses[key] for key in ("loss", "loss_CTS", "loss_consist", "loss_reg") if key in losses}

    def stage1_terms(self, part: Batch) -> Dict[str, Term]:
        """One micro-batch's l_sce^t (rectified labels), gamma_2 * l_reg^t and l_kl^t (weighted by gamma_1)."""
        opt = self.opt
        y_hat = part["pseudo"]
        out = self._net(self.BaseNet_DP, part["img_strong"] if opt.S_pseudo > 0 else part["img"])
        out = resize_outputs(out, y_hat.shape[2:])
        terms = {"l_sce^t": Term(self.symmetric_ce(out["out"], y_hat), pixels(lambda p: p["pseudo"]))}
        if opt.regular_w > 0:
            terms["l_reg^t"] = Term(regular_loss(out["out"], opt.regular_type) * opt.regular_w,
                                    images(lambda p: p["img"]))
        if opt.proto_consistW > 0:
            terms["l_kl^t"] = Term(self.structure_kl(part, out), pixels(lambda p: p["ema2strong"]),
                                   coefficient=opt.proto_consistW)
        return terms

    def denoised_targets(self, target: Batch) -> Dict[str, Any]:
        """Stage 1's no-gradient targets: the rectified pseudo labels ('pseudo', y_hat), the EMA weak view's
        prototype distances moved onto the strong view ('ema2strong'), the EMA class means ('class_means')."""
        opt = self.opt
        ema_out = self._ema_outputs(target["img_full"]) if opt.ema else None
        ema2weak_distance = None  # computed once: the reference computes it twice, identically
        if opt.proto_rectify or opt.proto_consistW > 0:
            ema2weak_distance = self.prototypes.distance(full_to_weak(ema_out["feat"], target["weak_params"]))
        y_hat = self.saved_labels_at_quarter(target)
        if opt.proto_rectify:  # denoise: omega = softmax(-d / tau) over classes, y_hat = argmax(omega * p_t0)
            y_hat = rectify_pseudo_labels(y_hat, rectification_weights(ema2weak_distance, opt.proto_temperature),
                                          opt.train_thred)
        if opt.S_pseudo > 0:
            y_hat = strong_labels(y_hat, target["params"])
        ema2strong = None
        if opt.proto_consistW > 0:  # the EMA weak view's distances moved onto the strong view
            ema2strong = strong_transform(ema2weak_distance, target["params"], padding=IGNORE_INDEX, scale=4)
        class_means = None
        if opt.moving_prototype:
            class_means = self.prototypes.class_means(ema_out["feat"].detach(), ema_out["out"].detach())
        return {"pseudo": y_hat, "ema2strong": ema2strong, "class_means": class_means}

    @staticmethod
    def saved_labels_at_quarter(target: Batch) -> torch.Tensor:
        """The saved pseudo labels at 1/4 resolution: the soft p_t0 when the batch holds them ('lpsoft'), else the
        hard ones ('lp'); which of them the loader reads is data.cityscapes_dataset.saved_pseudo_labels' decision."""
        if target.get("lpsoft") is not None:
            return F.interpolate(target["lpsoft"], scale_factor=0.25, mode="bilinear", align_corners=True)
        return quarter_hard_labels(target["lp"])

    @staticmethod
    def _concatenated(pairs: List[Any]) -> Any:
        """(vectors, ids) of the micro-batches one after another (the whole batch's image-major order)."""
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([v for v, _ in pairs]), torch.cat([i for _, i in pairs])

    def _ema_outputs(self, target_image_full: torch.Tensor) -> Dict[str, torch.Tensor]:
        """EMA network on the full target image, its feat and logits resized to 1/4 of the image."""
        with torch.no_grad():
            ema_out = self._net(self.BaseNet_ema, target_image_full)
        return resize_outputs(ema_out, (int(target_image_full.shape[2] / 4), int(target_image_full.shape[3] / 4)))

    def symmetric_ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """l_sce^t against N x 1 x h x w pseudo labels: alpha * CE + beta * RCE with --rce, else the CE."""
        labels = labels.reshape([labels.shape[0], labels.shape[2], labels.shape[3]])
        loss = cross_entropy2d(input=logits, target=labels)
        if self.opt.rce:
            loss = self.opt.rce_alpha * loss + self.opt.rce_beta * rce(logits, labels, self.class_numbers)
        return loss

    def structure_kl(self, part: Batch, out: Dict[str, torch.Tensor]) -> torch.Tensor:
        """l_kl^t: KL(soft prototype assignment of the EMA weak view, moved to the strong view || the strong view's)."""
        strong_out = out if self.opt.S_pseudo > 0 else self._net(self.BaseNet_DP, part["img_strong"])
        size = part["pseudo"].shape[2:]
        strong_distance = self.prototypes.distance(resize_outputs(strong_out, size)["feat"])
        return prototype_consistency(part["ema2strong"], strong_distance, self.opt.proto_temperature)

    # ------------------------------------------------------------------ stages 2-3

    def distillation_step(self, source: Batch, target: Batch) -> Dict[str, float]:
        """Stages 2-3: l_ce^s; then l_sce^t on the hard pseudo labels (strong view) + beta * l_kd."""
        micro = self._micro_batches(target, "img", "img_strong", "params", "lp")
        parts = [{**m, "pseudo": self._hard_pseudo_labels(m)} for m in micro]
        losses = self._step(self._source_pass(source, {"loss_GTA": ["l_ce^s"]}),
                            Pass(parts, self.distillation_terms, {}, objective="loss"))
        return {"loss_GTA": losses["loss_GTA"], "loss": losses["loss"]}

    def _hard_pseudo_labels(self, target: Batch) -> torch.Tensor:
        """The saved hard pseudo labels at 1/4 resolution, moved onto the strong view with S_pseudo > 0."""
        y_hat = quarter_hard_labels(target["lp"])
        return strong_labels(y_hat, target["params"]) if self.opt.S_pseudo > 0 else y_hat

    def distillation_terms(self, part: Batch) -> Dict[str, Term]:
        """The target terms of one micro-batch: l_sce^t on the hard pseudo labels, beta * l_kd (--distillation)."""
        opt = self.opt
        y_hat = part["pseudo"]
        out = self._net(self.BaseNet_DP, part["img_strong"] if opt.S_pseudo > 0 else part["img"])
        logits = F.interpolate(out["out"], size=y_hat.shape[2:], mode="bilinear", align_corners=True)
        terms = {"l_sce^t": Term(self.symmetric_ce(logits, y_hat), pixels(lambda p: p["pseudo"]))}
        if opt.distillation > 0:
            l_kd = self._distillation_loss(logits, part["img_strong"], y_hat.shape[2:])
            terms["l_kd"] = Term(opt.distillation * l_kd, images(lambda p: p["img"]))
        return terms

    def _distillation_loss(self, student_logits: torch.Tensor, target_imageS: torch.Tensor,
                           size: Sequence[int]) -> torch.Tensor:
        """l_kd: KL from the frozen teacher's softmax on the strong view to the student's (losses.distillation_loss)."""
        with torch.no_grad():
            teacher_logits = F.interpolate(self._net(self.teacher, target_imageS)["out"], size=size, mode="bilinear",
                                           align_corners=True)
        return distillation_loss(student_logits, teacher_logits, log_softmax=self.opt.kd_log_softmax)


# --stage -> its step; each takes the source and target batch dicts (as the loaders yield them)
# and returns the losses by name. Stage 3 is stage 2 again, from the stage-2 model.
STAGE_STEPS: Dict[str, Callable[[StageSteps, Batch, Batch], Dict[str, float]]] = {
    "warm_up": StageSteps.warm_up_step,
    "src_only": StageSteps.source_only_step,
    "stage1": StageSteps.stage1_step,
    "stage2": StageSteps.distillation_step,
    "stage3": StageSteps.distillation_step,
}
