"""ProDA's adaptation model: the networks, optimisers and one training step per stage.

Mirrors the reference `models/adaptation_modelv2.py`:
  * `step_adv` (warm-up): source cross entropy + adversarial alignment of the target softmax
    through `FCDiscriminator`, then one discriminator update;
  * `step_source` (src_only): the warm-up step without the discriminator;
  * `step` (stage 1): prototypical pseudo-label denoising -- soft pseudo labels rectified by
    each pixel's softmax over negative distances to the class prototypes, computed on the
    momentum (EMA) network's features of the full image mapped back to the weak view
    (`full2weak`) -- plus target structure learning: the prototype assignment of the strong
    view must match the EMA weak view's, transformed to the strong view (`label_strong_T`);
    moving-average prototypes and the EMA update follow;
  * `step_distillation` (stages 2-3): hard pseudo labels on the strong view, optionally with
    knowledge distillation from the frozen previous-stage teacher.

The prototype operations are vectorised (no Python loops over classes or pixels; loops run at
most over the batch) and equal the reference's per-class loops; they are also exposed as
module-level functions for `benchmarks/proda_proto_bench.py`.

Multi-GPU runs use torchrun: the student and the discriminator are wrapped in
DistributedDataParallel, batch norms become SyncBatchNorm (`--bn sync_bn`), and prototype
updates are gathered from every process in rank order, so every copy of the prototypes stays
identical and equal to what one process would compute on the whole batch.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from proda.data.randaugment import GEOMETRIC, UNSET, affine_sample
from proda.models.deeplabv2 import Deeplab
from proda.models.discriminator import FCDiscriminator
from proda.models.utils import IGNORE_INDEX, cross_entropy2d, freeze_bn, freeze_bn_params, get_scheduler
from proda.utils import CheckpointError, OptionError, get_device

FEAT_CHANNELS = 256          # width of Deeplab's 'feat', where the prototypes live
EMA_DECAY = 0.999            # momentum of the EMA (teacher) network
PROTO_COUNT_CAP = 3000       # objective_vectors_num never exceeds this
PROTO_MEAN_WARMUP = 100      # with start_mean, a class's first 100 updates are plain means
MIN_CLASS_PIXELS = 10        # calculate_mean_vector skips classes predicted on fewer pixels
NEAR_PAIR_TOL = 0.1          # prototype_distance redoes pixels with d^2 < tol * (|x|^2 + |p|^2) in float64


# ----------------------------------------------------------------------------- devices

def is_distributed() -> bool:
    """True inside a torchrun process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batchnorm_class(bn: str, device: torch.device) -> Type[nn.Module]:
    """'sync_bn' -> nn.SyncBatchNorm when several GPU processes train together, else BatchNorm2d."""
    if bn not in ("sync_bn", "bn"):
        raise NotImplementedError(f"batch norm choice {bn} is not implemented")
    if bn == "sync_bn" and is_distributed() and device.type != "cpu":
        return nn.SyncBatchNorm
    return nn.BatchNorm2d


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `net` under torchrun, the plain module otherwise."""
    if not is_distributed():
        return net
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids)


def all_gather_rows(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Each tensor's rows from every process, concatenated in rank order (unchanged in one process).

    Rank order is the order of the reference's DataParallel batch, so prototype updates applied
    in this order equal the reference's and are identical on every process.
    """
    if not is_distributed():
        return tensors
    world = dist.get_world_size()
    count = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    gathered = []
    for t in tensors:
        padded = t.new_zeros((max(counts),) + tuple(t.shape[1:]))
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:c] for part, c in zip(parts, counts)]))
    return tuple(gathered)


# ----------------------------------------------------------------------------- prototype ops

def prototype_distance(feat: torch.Tensor, prototypes: torch.Tensor, tol: float = NEAR_PAIR_TOL) -> torch.Tensor:
    """Euclidean distance of every pixel feature to every prototype: N x C x H x W -> N x K x H x W.

    Uses |x|^2 - 2 x.p + |p|^2 (one matrix product instead of the reference's K passes over
    the features). In float32 that form loses relative precision when a pixel lies very close
    to a prototype, so pixels having any pair with d^2 < tol * (|x|^2 + |p|^2) get their
    distances recomputed in float64; the result then matches the reference loop to ~1e-6.
    """
    n, c, h, w = feat.shape
    protos = prototypes.to(feat.device, feat.dtype)
    flat = feat.reshape(n, c, h * w)
    x_sq = flat.pow(2).sum(1, keepdim=True)                 # N x 1 x HW
    p_sq = protos.pow(2).sum(1).view(1, -1, 1)              # 1 x K x 1
    scale = x_sq + p_sq
    d_sq = torch.baddbmm(scale, protos.expand(n, -1, -1), flat, alpha=-2)
    near = (d_sq < tol * scale).any(1)                      # N x HW
    distance = d_sq.clamp_min(0).sqrt()  # out of place: the student's features need gradients
    if near.any():
        rows = []
        for i in range(n):  # at most the batch size
            idx = near[i].nonzero().squeeze(1)
            exact = exact_distance(flat[i].index_select(1, idx), protos)
            rows.append(distance[i].index_copy(1, idx, exact))
        distance = torch.stack(rows)
    return distance.view(n, -1, h, w)


def exact_distance(x: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Distances of C x M features to K prototypes (K x M), expanded in float64, where the
    cancellation between the three terms stays far below float32 precision."""
    x64, p64 = x.double(), protos.double()
    d_sq = x64.pow(2).sum(0, keepdim=True) + p64.pow(2).sum(1, keepdim=True) - 2 * (p64 @ x64)
    return d_sq.clamp_min_(0).sqrt_().to(x.dtype)


def rectification_weights(distance: torch.Tensor, temperature: float) -> torch.Tensor:
    """ProDA's prototype weights: softmax over classes of -(d - d_nearest) * temperature."""
    nearest = distance.min(dim=1, keepdim=True)[0]
    return F.softmax(-(distance - nearest) * temperature, dim=1)


def one_hot_labels(label: torch.Tensor, n_class: int) -> torch.Tensor:
    """N x 1 x H x W labels -> N x (n_class + 1) x H x W one-hot; 250 and other ids >= n_class go to the last channel."""
    ids = torch.where(label < n_class, label, torch.full_like(label, n_class)).long()
    one_hot = torch.zeros(label.shape[0], n_class + 1, label.shape[2], label.shape[3],
                          device=label.device, dtype=torch.float32)
    return one_hot.scatter_(1, ids, 1)


def class_mean_vectors(feat: torch.Tensor, outputs: torch.Tensor, n_class: int,
                       labels: Optional[torch.Tensor] = None,
                       thresh: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image and class, the mean feature of the pixels predicted as that class.

    Returns (vectors N x K x C, valid N x K). Pixels count when their confidence is >= thresh
    and, with labels, when prediction and label agree. A class is valid when its weight is
    non-zero and it is predicted on >= 10 pixels (that count ignores thresh, as the reference).
    """
    probs = F.softmax(outputs, dim=1)
    conf = probs.max(dim=1, keepdim=True)[0]
    mask = conf.ge(-1 if thresh is None else thresh)
    pred = one_hot_labels(probs.argmax(dim=1, keepdim=True).float(), n_class)
    if labels is not None:
        pred = one_hot_labels(labels, n_class) * pred
    pred = pred[:, :n_class]
    weights = pred * mask                                            # N x K x H x W
    scale = weights.mean(dim=(2, 3))                                 # the reference's avg-pooled weight
    valid = (scale != 0) & ((pred > 0).sum(dim=(2, 3)) >= MIN_CLASS_PIXELS)
    n, c, h, w = feat.shape
    pooled = torch.bmm(weights.flatten(2), feat.reshape(n, c, h * w).transpose(1, 2)) / (h * w)
    vectors = torch.where(valid.unsqueeze(2), pooled / scale.unsqueeze(2), torch.zeros_like(pooled))
    return vectors, valid


def occurrence_rank(ids: torch.Tensor, n_class: int) -> torch.Tensor:
    """For each entry, how many earlier entries have the same id (0 for a class's first vector)."""
    one_hot = F.one_hot(ids, n_class)
    return (one_hot.cumsum(0) - 1).gather(1, ids.unsqueeze(1)).squeeze(1)


def update_prototypes(prototypes: torch.Tensor, counts: torch.Tensor, vectors: torch.Tensor,
                      ids: torch.Tensor, momentum: float, name: str = "moving_average",
                      start_mean: bool = True) -> None:
    """Apply the reference's single-vector prototype update to every (id, vector), in order, in place.

    Entries are processed in rounds: round r takes each class's r-th vector, so the classes of a
    round are distinct and one vectorised update per round equals the sequential loop exactly.
    'mean': running mean; 'moving_average': p <- (1 - momentum) p + momentum v; with start_mean a
    class uses the mean while its count is < 100. Counts saturate at 3000. All-zero vectors are skipped.
    """
    if name not in ("mean", "moving_average"):
        raise NotImplementedError(f"no such updating way of objective vectors {name}")
    vectors = vectors.reshape(vectors.shape[0], -1).to(prototypes.device, prototypes.dtype)
    ids = ids.to(prototypes.device).long()
    # index_select rather than boolean masks: these tensors are tiny and mask indexing has a high fixed cost
    keep = (vectors.sum(1) != 0).nonzero().squeeze(1)
    vectors, ids = vectors.index_select(0, keep), ids.index_select(0, keep)
    if ids.numel() == 0:
        return
    rank = occurrence_rank(ids, prototypes.shape[0])
    for r in range(int(rank.max()) + 1):  # at most the number of images behind the vectors
        sel = (rank == r).nonzero().squeeze(1)
        cls, vec = ids.index_select(0, sel), vectors.index_select(0, sel)
        old, num = prototypes.index_select(0, cls), counts.index_select(0, cls)
        use_mean = num < PROTO_MEAN_WARMUP if start_mean else torch.zeros_like(num, dtype=torch.bool)
        if name == "mean":
            use_mean = torch.ones_like(use_mean)
        mean = (old * num.unsqueeze(1) + vec) / (num + 1).unsqueeze(1)
        moving = old * (1 - momentum) + momentum * vec
        prototypes.index_copy_(0, cls, torch.where(use_mean.unsqueeze(1), mean, moving))
        counts.index_copy_(0, cls, (num + 1).clamp(max=PROTO_COUNT_CAP))


def valid_vectors(vectors: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The valid rows of class_mean_vectors' N x K x C output, image-major, and their class ids."""
    index = valid.flatten().nonzero().squeeze(1)
    return vectors.flatten(0, 1).index_select(0, index), index % valid.shape[1]


# ----------------------------------------------------------------------------- view mapping

def per_sample(value: Any) -> List[Any]:
    """A collated per-image parameter as a Python list (one host transfer instead of one per image)."""
    if torch.is_tensor(value):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):  # not collated: one entry per image already
        return [v.tolist() if torch.is_tensor(v) else v for v in value]
    return [value]


def per_sample_tuples(value: Sequence[Any]) -> List[Tuple[Any, ...]]:
    """A collated tuple parameter (a list of per-image tensors, e.g. a crop box) as per-image tuples."""
    return list(zip(*[per_sample(v) for v in value]))


def full_to_weak(feat: torch.Tensor, weak_params: Dict[str, Any]) -> torch.Tensor:
    """Map 1/4-resolution maps of the full target image onto its weak view (resize, crop, flip).

    Replays the recorded RandomSized (h, w), RandomCrop (y1, y2, x1, x2) and flip, at 1/4 scale
    with the reference's int() rounding. Loops over the batch only: each image has its own size.
    """
    n = feat.shape[0]
    sizes = per_sample_tuples(weak_params["RandomSized"]) if "RandomSized" in weak_params else [None] * n
    crops = per_sample_tuples(weak_params["RandomCrop"]) if "RandomCrop" in weak_params else [None] * n
    flips = per_sample(weak_params["RandomHorizontallyFlip"]) if "RandomHorizontallyFlip" in weak_params else [False] * n
    views = []
    for i in range(n):
        view = feat[i:i + 1]
        if sizes[i] is not None:
            h, w = sizes[i]
            view = F.interpolate(view, size=[int(h / 4), int(w / 4)], mode="bilinear", align_corners=True)
        if crops[i] is not None:
            y1, y2, x1, x2 = crops[i]
            y1, th, x1, tw = int(y1 / 4), int((y2 - y1) / 4), int(x1 / 4), int((x2 - x1) / 4)
            view = view[:, :, y1:y1 + th, x1:x1 + tw]
        if flips[i]:
            view = view.flip(3)
        views.append(view)
    return torch.cat(views, 0)


def strong_transform(label: torch.Tensor, params: Dict[str, Any], padding: float, scale: int = 1) -> torch.Tensor:
    """Replay the strong view's recorded RandAugment geometry on N x C x H x W maps (labels or distances).

    Follows the reference: flip, shears, translations (pixels // scale), rotation and the cutout
    box (// scale), in the order of the params dict; pixels that fall outside the image or
    inside the cutout become `padding`. Loops over the batch and the recorded ops only.
    """
    label = label + 1  # 0 now marks "empty" (grid_sample's zero padding and the cutout)
    n = label.shape[0]
    recorded = []
    for name, value in params.items():
        if name == "CutoutAbs":
            if isinstance(value, (list, tuple)):  # 1e4 (a tensor) when no cutout was drawn
                recorded.append((name, per_sample_tuples(value)))
        elif name == "Hflip" or name in GEOMETRIC:
            recorded.append((name, per_sample(value)))
    for i in range(n):
        for name, values in recorded:
            v = values[i]
            if name == "Hflip":
                if v == 1:
                    label[i] = label[i].flip(-1)
            elif name == "CutoutAbs":
                x0, y0, x1, y1 = (int(c // scale) for c in v)
                label[i, :, y0:y1, x0:x1] = 0
            elif v != UNSET:
                v = int(v // scale) if name in ("TranslateX", "TranslateY") else v
                label[i:i + 1] = affine_sample(label[i:i + 1].clone(), v, name)
    label.masked_fill_(label == 0, padding + 1)
    return label - 1


# ----------------------------------------------------------------------------- the model

class CustomModel:
    """ProDA's trainer state: student (BaseNet), EMA network, teacher, discriminator, prototypes, optimisers."""

    def __init__(self, opt: Any, logger: logging.Logger, isTrain: bool = True) -> None:
        self.opt = opt
        self.class_numbers = opt.n_class
        self.logger = logger
        self.device = get_device(opt.device)
        self.best_iou = -100
        self.iter = 0
        self.nets: List[nn.Module] = []
        self.nets_DP: List[nn.Module] = []
        self.objective_vectors = torch.zeros([self.class_numbers, FEAT_CHANNELS])
        self.objective_vectors_num = torch.zeros([self.class_numbers], device=self.device)

        BatchNorm = batchnorm_class(opt.bn, self.device)
        restore_from = None if opt.no_resume else opt.resume_path
        if not opt.no_resume:
            self.best_iou = 0
        self.BaseNet = self._build_student(BatchNorm, restore_from).to(self.device)
        logger.info("the backbone is %s", opt.model_name)
        self.nets.append(self.BaseNet)

        self.optimizers: List[torch.optim.Optimizer] = []
        self.schedulers: List[Any] = []
        if opt.stage == "warm_up":
            self.net_D = FCDiscriminator(inplanes=self.class_numbers).to(self.device)
            self.nets.append(self.net_D)
            self.optimizer_D = torch.optim.Adam(self.net_D.parameters(), lr=1e-4, betas=(0.9, 0.99))
            self.optimizers.append(self.optimizer_D)
            self.DSchedule = get_scheduler(self.optimizer_D, opt)
            self.schedulers.append(self.DSchedule)
            self.net_D_DP = wrap_ddp(self.net_D, self.device)
            self.nets_DP.append(self.net_D_DP)

        self.BaseOpti = self._build_optimizer()
        self.optimizers.append(self.BaseOpti)
        self.BaseSchedule = get_scheduler(self.BaseOpti, opt)
        self.schedulers.append(self.BaseSchedule)

        if opt.ema:
            if opt.ema_bn != self.BaseNet.bn_clr:
                raise OptionError("--ema_bn gives the EMA network the extra SimCLR batch norm, so the student needs "
                                  "it too: use --ema_bn together with --bn_clr --student_init simclr (or neither)")
            # the reference initialises it like the student, then copies the student's state over it
            self.BaseNet_ema = Deeplab(BatchNorm, num_classes=self.class_numbers, bn_clr=opt.ema_bn,
                                       layers=opt.backbone_layers, init="random").to(self.device)
            self.BaseNet_ema.load_state_dict(self.BaseNet.state_dict())
            self.BaseNet_ema.requires_grad_(False)  # updated by EMA only
            self.BaseNet_ema_DP = self.BaseNet_ema
        if opt.distillation > 0:
            self.teacher = Deeplab(BatchNorm, num_classes=self.class_numbers, restore_from=opt.resume_path,
                                   bn_clr=opt.ema_bn, layers=opt.backbone_layers).to(self.device)
            self.teacher.eval()
            self.teacher.requires_grad_(False)
            self.teacher_DP = self.teacher

        self.adv_source_label = 0
        self.adv_target_label = 1
        self.bceloss = nn.BCEWithLogitsLoss() if opt.gan == "Vanilla" else nn.MSELoss()

        if opt.freeze_bn:  # before DDP, which must know which parameters get gradients
            self.BaseNet.apply(freeze_bn_params)
        self.BaseNet_DP = wrap_ddp(self.BaseNet, self.device)
        self.nets_DP.append(self.BaseNet_DP)

    # ------------------------------------------------------------------ construction

    def _build_student(self, BatchNorm: Type[nn.Module], restore_from: Optional[str]) -> nn.Module:
        """The student as the reference builds it for --student_init (bn_clr only with simclr, or random)."""
        opt = self.opt
        common = dict(num_classes=self.class_numbers, restore_from=restore_from, layers=opt.backbone_layers)
        if opt.student_init == "simclr":
            return Deeplab(BatchNorm, initialization=opt.simclr_path, bn_clr=opt.bn_clr, **common)
        if opt.student_init == "random":
            return Deeplab(BatchNorm, init="random", bn_clr=opt.bn_clr, **common)
        return Deeplab(BatchNorm, imagenet_path=opt.imagenet_path, **common)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """SGD (momentum 0.9, weight decay 2e-4); backbone 1x / head 10x groups with --finetune and in warm-up."""
        opt = self.opt
        if opt.finetune or opt.stage in ("warm_up", "src_only"):
            params: Any = [
                {"params": list(self.BaseNet.get_1x_lr_params(unique=opt.unique_lr_params)), "lr": opt.lr},
                {"params": list(self.BaseNet.get_10x_lr_params()), "lr": opt.lr * 10}]
        else:
            params = self.BaseNet.parameters()
        with warnings.catch_warnings():  # the reference's repeated backbone parameters are deliberate
            warnings.filterwarnings("ignore", message="optimizer contains a parameter group with duplicate")
            # foreach=False: the per-parameter loop, which applies repeated parameters one after another
            return torch.optim.SGD(params, lr=opt.lr, weight_decay=2e-4, momentum=0.9, foreach=False)

    @property
    def objective_vectors(self) -> torch.Tensor:
        """The class prototypes, n_class x 256, on the model's device."""
        return self._objective_vectors

    @objective_vectors.setter
    def objective_vectors(self, value: Any) -> None:
        """Accept prototypes from anywhere (a loaded file, another device) as float32 on the model's device."""
        value = torch.as_tensor(value).detach().to(self.device, torch.float32, copy=True)  # updated in place later
        if tuple(value.shape) != (self.class_numbers, FEAT_CHANNELS):
            raise ValueError(f"prototypes must be {self.class_numbers} x {FEAT_CHANNELS}, got {tuple(value.shape)}")
        self._objective_vectors = value

    def _check_stage1_options(self) -> None:
        """Stage 1 reads the EMA network's output; the reference crashes without --ema."""
        opt = self.opt
        needs_ema = [flag for flag, on in (("--proto_rectify", opt.proto_rectify),
                                           ("--proto_consistW > 0", opt.proto_consistW > 0),
                                           ("--moving_prototype", opt.moving_prototype)) if on]
        if needs_ema and not opt.ema:
            raise OptionError(f"stage 1 with {', '.join(needs_ema)} needs --ema (the EMA network provides "
                              "the features of the full target image)")

    # ------------------------------------------------------------------ steps

    def _source_loss(self, source_x: torch.Tensor, source_label: torch.Tensor,
                     source_imageS: Optional[torch.Tensor], source_params: Optional[Dict[str, Any]]):
        """Source CE (on the strong view with labels moved there when S_pseudo_src > 0); returns (loss, upsampled logits)."""
        if self.opt.S_pseudo_src <= 0:
            return self._source_ce(source_x, source_label)
        source_output = self.BaseNet_DP(source_imageS)
        label_d4 = F.interpolate(source_label.unsqueeze(1).float(), size=source_output["out"].size()[2:])
        label_s = self.label_strong_T(label_d4.clone(), source_params, padding=IGNORE_INDEX, scale=4).long()
        loss = cross_entropy2d(input=source_output["out"], target=label_s.squeeze(1)) * self.opt.S_pseudo_src
        source_outputUp = F.interpolate(source_output["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return loss, source_outputUp

    def _source_ce(self, source_x: torch.Tensor, source_label: torch.Tensor):
        """Cross entropy of the student's logits, upsampled to the source image, against its labels; returns (loss, upsampled logits)."""
        source_out = self.BaseNet_DP(source_x, ssl=True)
        source_outputUp = F.interpolate(source_out["out"], size=source_x.size()[2:], mode="bilinear",
                                        align_corners=True)
        return cross_entropy2d(input=source_outputUp, target=source_label), source_outputUp

    def _gan_loss(self, d_out: torch.Tensor, label: int) -> torch.Tensor:
        """LS-GAN (MSE) or vanilla (BCE with logits) loss of discriminator logits against a constant label."""
        return self.bceloss(d_out, torch.full_like(d_out, float(label)))

    def step_adv(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                 source_imageS: Optional[torch.Tensor] = None,
                 source_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """Warm-up step: update G on source CE + adv * fool-D loss, then D on source vs target softmax."""
        for param in self.net_D.parameters():
            param.requires_grad = False
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

        for param in self.net_D.parameters():
            param.requires_grad = True
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

    def _ema_outputs(self, target_image_full: torch.Tensor) -> Dict[str, torch.Tensor]:
        """EMA network on the full target image, its feat and logits resized to 1/4 of the image."""
        with torch.no_grad():
            ema_out = self.BaseNet_ema_DP(target_image_full)
        return self._resize_outputs(ema_out, (int(target_image_full.shape[2] / 4), int(target_image_full.shape[3] / 4)))

    def _resize_outputs(self, out: Dict[str, torch.Tensor], size: Sequence[int]) -> Dict[str, torch.Tensor]:
        """Bilinearly resize a network output dict's 'out' and 'feat' to `size` (align_corners=True)."""
        return {k: F.interpolate(out[k], size=size, mode="bilinear", align_corners=True) for k in ("out", "feat")}

    def step(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
             target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
             target_lp: Optional[torch.Tensor] = None, target_lpsoft: Optional[torch.Tensor] = None,
             target_image_full: Optional[torch.Tensor] = None,
             target_weak_params: Optional[Dict[str, Any]] = None) -> Tuple[float, float, float]:
        """Stage 1: source CE; rectified pseudo-label CE (+ SCE, regulariser); prototype consistency; prototypes; EMA."""
        opt = self.opt
        self._check_stage1_options()
        loss_GTA, _ = self._source_ce(source_x, source_label)
        loss_GTA.backward()

        if opt.proto_rectify:
            threshold_arg = F.interpolate(target_lpsoft, scale_factor=0.25, mode="bilinear", align_corners=True)
        else:
            threshold_arg = F.interpolate(target_lp.unsqueeze(1).float(), scale_factor=0.25).long()
        ema_out = self._ema_outputs(target_image_full) if opt.ema else None

        target_out = self.BaseNet_DP(target_imageS) if opt.S_pseudo > 0 else self.BaseNet_DP(target_x)
        target_out = self._resize_outputs(target_out, threshold_arg.shape[2:])

        loss = torch.zeros(1, device=source_x.device)
        batch, _, w, h = threshold_arg.shape
        ema2weak_distance = None  # computed once: the reference computes it twice, identically
        if opt.proto_rectify or opt.proto_consistW > 0:
            ema2weak_distance = self.feat_prototype_distance(self.full2weak(ema_out["feat"], target_weak_params))
        if opt.proto_rectify:  # denoise: weight the soft pseudo label by prototype proximity
            weights = rectification_weights(ema2weak_distance, opt.proto_temperature)
            rectified = weights * threshold_arg
            threshold_arg = rectified.max(1, keepdim=True)[1]
            rectified = rectified / rectified.sum(1, keepdim=True)
            argmax = rectified.max(1, keepdim=True)[0]
            threshold_arg.masked_fill_(argmax < opt.train_thred, IGNORE_INDEX)
        if opt.S_pseudo > 0:
            threshold_arg = self.label_strong_T(threshold_arg.clone().float(), target_params,
                                                padding=IGNORE_INDEX, scale=4).to(torch.int64)

        loss_CTS = cross_entropy2d(input=target_out["out"], target=threshold_arg.reshape([batch, w, h]))
        if opt.rce:
            rce = self.rce(target_out["out"], threshold_arg.reshape([batch, w, h]).clone())
            loss_CTS = opt.rce_alpha * loss_CTS + opt.rce_beta * rce
        if opt.regular_w > 0:
            loss_CTS = loss_CTS + self.regular_loss(target_out["out"]) * opt.regular_w

        loss_consist = torch.zeros(1, device=source_x.device)
        if opt.proto_consistW > 0:  # target structure learning
            loss_consist = self._proto_consistency(ema2weak_distance, target_out, target_imageS, target_params,
                                                   threshold_arg.shape[2:])
            loss = loss + opt.proto_consistW * loss_consist

        loss = loss + loss_CTS
        loss.backward()
        self.BaseOpti.step()
        self.BaseOpti.zero_grad()

        if opt.moving_prototype:
            vectors, ids = valid_vectors(*class_mean_vectors(ema_out["feat"].detach(), ema_out["out"].detach(),
                                                             self.class_numbers))
            self.update_objective_vectors(vectors, ids, start_mean=False)
        if opt.ema:
            self._update_ema()
        return loss.item(), loss_CTS.item(), loss_consist.item()

    def _proto_consistency(self, ema2weak_distance: torch.Tensor, target_out: Dict[str, torch.Tensor],
                           target_imageS: torch.Tensor, target_params: Dict[str, Any],
                           size: Sequence[int]) -> torch.Tensor:
        """KL(soft prototype assignment of the EMA weak view moved to the strong view || the strong view's)."""
        opt = self.opt
        ema2strong_distance = self.label_strong_T(ema2weak_distance, target_params, padding=IGNORE_INDEX, scale=4)
        mask = (ema2strong_distance != IGNORE_INDEX).float()
        teacher = F.softmax(-ema2strong_distance * opt.proto_temperature, dim=1)

        targetS_out = target_out if opt.S_pseudo > 0 else self.BaseNet_DP(target_imageS)
        targetS_out = self._resize_outputs(targetS_out, size)
        strong_distance = self.feat_prototype_distance(targetS_out["feat"])
        student = F.log_softmax(-strong_distance * opt.proto_temperature, dim=1)
        loss_consist = F.kl_div(student, teacher, reduction="none")
        return (loss_consist * mask).sum() / mask.sum()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """EMA network <- 0.999 EMA + 0.001 student for parameters; buffers (BN statistics) copied."""
        for param_q, param_k in zip(self.BaseNet.parameters(), self.BaseNet_ema.parameters()):
            param_k.copy_(param_k * EMA_DECAY + param_q * (1.0 - EMA_DECAY))
        for buffer_q, buffer_k in zip(self.BaseNet.buffers(), self.BaseNet_ema.buffers()):
            buffer_k.copy_(buffer_q)

    def step_distillation(self, source_x: torch.Tensor, source_label: torch.Tensor, target_x: torch.Tensor,
                          target_imageS: Optional[torch.Tensor] = None, target_params: Optional[Dict[str, Any]] = None,
                          target_lp: Optional[torch.Tensor] = None) -> Tuple[float, float]:
        """Stages 2-3: source CE; hard pseudo-label CE (+ SCE) on the strong view; optional KD from the teacher."""
        opt = self.opt
        loss_GTA, _ = self._source_ce(source_x, source_label)
        loss_GTA.backward()

        threshold_arg = F.interpolate(target_lp.unsqueeze(1).float(), scale_factor=0.25).long()
        if opt.S_pseudo > 0:
            threshold_arg = self.label_strong_T(threshold_arg.clone().float(), target_params,
                                                padding=IGNORE_INDEX, scale=4).to(torch.int64)
            target_out = self.BaseNet_DP(target_imageS)
        else:
            target_out = self.BaseNet_DP(target_x)
        target_logits = F.interpolate(target_out["out"], size=threshold_arg.shape[2:], mode="bilinear",
                                      align_corners=True)
        batch, _, w, h = threshold_arg.shape
        loss = cross_entropy2d(input=target_logits, target=threshold_arg.reshape([batch, w, h]),
                               size_average=True, reduction="mean")
        if opt.rce:
            rce = self.rce(target_logits, threshold_arg.reshape([batch, w, h]).clone())
            loss = opt.rce_alpha * loss + opt.rce_beta * rce
        if opt.distillation > 0:
            loss = loss + opt.distillation * self._distillation_loss(target_logits, target_imageS,
                                                                     threshold_arg.shape[2:])
        loss.backward()
        self.BaseOpti.step()
        self.BaseOpti.zero_grad()
        return loss_GTA.item(), loss.item()

    def _distillation_loss(self, student_logits: torch.Tensor, target_imageS: torch.Tensor,
                           size: Sequence[int]) -> torch.Tensor:
        """KL from the frozen teacher's softmax on the strong view to the student's prediction.

        The reference passes the student's softmax (not its log-softmax) to F.kl_div and masks
        with `teacher != 250`, which is always true; that produced the published numbers and is
        the default. --kd_log_softmax passes the log-softmax (the corrected KL).
        """
        if self.opt.kd_log_softmax:
            student = F.log_softmax(student_logits, dim=1)
        else:
            student = F.softmax(student_logits, dim=1)
        with torch.no_grad():
            teacher_logits = self.teacher_DP(target_imageS)["out"]
            teacher_logits = F.interpolate(teacher_logits, size=size, mode="bilinear", align_corners=True)
            teacher = F.softmax(teacher_logits, dim=1)
        loss_kd = F.kl_div(student, teacher, reduction="none")
        mask = (teacher != IGNORE_INDEX).float()
        return (loss_kd * mask).sum() / mask.sum()

    # ------------------------------------------------------------------ losses

    def regular_loss(self, activation: torch.Tensor) -> torch.Tensor:
        """Confidence regulariser on all pixels: MRENT (negative entropy) or MRKLD (KL to uniform, up to a constant)."""
        logp = F.log_softmax(activation, dim=1)
        if self.opt.regular_type == "MRENT":
            p = F.softmax(activation, dim=1)
            return (p * logp).sum() / (p.shape[0] * p.shape[2] * p.shape[3])
        if self.opt.regular_type == "MRKLD":
            return -logp.sum() / logp.numel()
        raise NotImplementedError(f"regular_type {self.opt.regular_type}")

    def rce(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Reverse cross entropy of symmetric CE: -sum p log(one-hot clamped to 1e-4), over labelled pixels."""
        pred = torch.clamp(F.softmax(pred, dim=1), min=1e-7, max=1.0)
        mask = (labels != IGNORE_INDEX).float()
        labels = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, self.class_numbers), labels)
        one_hot = F.one_hot(labels, self.class_numbers + 1).float()
        one_hot = torch.clamp(one_hot.permute(0, 3, 1, 2)[:, :-1], min=1e-4, max=1.0)
        return -(torch.sum(pred * torch.log(one_hot), dim=1) * mask).sum() / (mask.sum() + 1e-6)

    # ------------------------------------------------------------------ prototypes and views

    def calculate_mean_vector(self, feat_cls: torch.Tensor, outputs: torch.Tensor,
                              labels: Optional[torch.Tensor] = None,
                              thresh: Optional[float] = None) -> Tuple[torch.Tensor, List[int]]:
        """Class mean features per image, in the reference's order (image-major, then class).

        Returns (vectors M x C x 1 x 1, ids) -- what the reference's list of C x 1 x 1 tensors and
        list of class ids hold. With thresh=None this is also calc_prototype.py's version.
        """
        vectors, ids = valid_vectors(*class_mean_vectors(feat_cls, outputs, self.class_numbers, labels, thresh))
        return vectors[:, :, None, None], ids.tolist()

    def update_objective_vectors(self, vectors: Any, ids: Any, name: str = "moving_average",
                                 start_mean: bool = True) -> None:
        """Update the prototypes with a batch of (id, vector) pairs, as the reference's loop does one by one.

        Under torchrun the pairs of every process are applied, in rank order, on every process.
        """
        if isinstance(vectors, (list, tuple)):  # the reference's list of C x 1 x 1 tensors
            vectors = [torch.as_tensor(v).reshape(-1) for v in vectors]
            vectors = torch.stack(vectors) if vectors else torch.zeros(0, FEAT_CHANNELS)
        vectors = torch.as_tensor(vectors, dtype=torch.float32, device=self.device)
        vectors = vectors.reshape(vectors.shape[0], -1) if vectors.numel() else vectors.reshape(0, FEAT_CHANNELS)
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1)
        vectors, ids = all_gather_rows(vectors, ids)
        update_prototypes(self.objective_vectors, self.objective_vectors_num, vectors, ids,
                          self.opt.proto_momentum, name=name, start_mean=start_mean)

    def update_objective_SingleVector(self, id: int, vector: Any, name: str = "moving_average",
                                      start_mean: bool = True) -> None:
        """The reference's one-vector update (this process only)."""
        vector = torch.as_tensor(vector, dtype=torch.float32, device=self.device).reshape(1, -1)
        ids = torch.as_tensor([id], dtype=torch.long, device=self.device).reshape(-1)
        update_prototypes(self.objective_vectors, self.objective_vectors_num, vector, ids,
                          self.opt.proto_momentum, name=name, start_mean=start_mean)

    def feat_prototype_distance(self, feat: torch.Tensor) -> torch.Tensor:
        """Distance of each pixel feature to each class prototype, N x n_class x H x W."""
        return prototype_distance(feat, self.objective_vectors)

    def get_prototype_weight(self, feat: torch.Tensor, label: Any = None,
                             target_weak_params: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """Pseudo-label rectification weights: softmax over classes of -(d - d_nearest) * temperature, on the weak view."""
        distance = self.feat_prototype_distance(self.full2weak(feat, target_weak_params))
        return rectification_weights(distance, self.opt.proto_temperature)

    def full2weak(self, feat: torch.Tensor, target_weak_params: Dict[str, Any]) -> torch.Tensor:
        """Map features of the full target image onto its weak (resized, cropped, flipped) view."""
        return full_to_weak(feat, target_weak_params)

    def label_strong_T(self, label: torch.Tensor, params: Dict[str, Any], padding: float, scale: int = 1) -> torch.Tensor:
        """Move weak-view maps (labels, distances) onto the strong view with the recorded RandAugment geometry."""
        return strong_transform(label, params, padding, scale)

    def process_label(self, label: torch.Tensor) -> torch.Tensor:
        """One-hot labels with an extra last channel for ignored pixels."""
        return one_hot_labels(label, self.class_numbers)

    # ------------------------------------------------------------------ bookkeeping

    def freeze_bn_apply(self) -> None:
        """Put every batch norm of the trained networks in eval mode and stop its affine gradients."""
        for net in self.nets + self.nets_DP:
            net.apply(freeze_bn)

    def scheduler_step(self) -> None:
        """Advance every poly schedule by one iteration."""
        for scheduler in self.schedulers:
            scheduler.step()

    def optimizer_zerograd(self) -> None:
        """Clear the gradients of every optimiser."""
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def eval(self, net: Optional[nn.Module] = None, logger: Optional[logging.Logger] = None) -> None:
        """Eval mode for the trained networks (the EMA network and teacher are left as they are, as the reference)."""
        for module in ([net] if net is not None else self.nets + self.nets_DP):
            module.eval()
        if logger is not None:
            logger.info("Successfully set the model eval mode")

    def train(self, net: Optional[nn.Module] = None, logger: Optional[logging.Logger] = None) -> None:
        """Train mode for the trained networks (the teacher stays in eval mode)."""
        for module in ([net] if net is not None else self.nets + self.nets_DP):
            module.train()

    # ------------------------------------------------------------------ checkpoints

    def reference_checkpoint(self, iters: Optional[int] = None, best_iou: Optional[float] = None) -> Dict[str, Any]:
        """The reference's checkpoint dict: {'ResNet101': {model_state, objective_vectors}, ['FCDiscriminator'], iter, best_iou}."""
        state: Dict[str, Any] = {net.__class__.__name__: {"model_state": net.state_dict(),
                                                          "objective_vectors": self.objective_vectors}
                                 for net in self.nets}
        state["iter"] = self.iter if iters is None else iters
        state["best_iou"] = self.best_iou if best_iou is None else best_iou
        return state

    def training_state(self) -> Dict[str, Any]:
        """Everything needed to resume this stage exactly: networks, EMA, optimisers, schedules, prototypes, counters."""
        state = {"nets": {net.__class__.__name__: net.state_dict() for net in self.nets},
                 "optimizers": [o.state_dict() for o in self.optimizers],
                 "schedulers": [s.state_dict() for s in self.schedulers],
                 "objective_vectors": self.objective_vectors,
                 "objective_vectors_num": self.objective_vectors_num,
                 "iter": self.iter,
                 "best_iou": self.best_iou,
                 "stage": self.opt.stage}
        if self.opt.ema:
            state["ema"] = self.BaseNet_ema.state_dict()
        return state

    def load_training_state(self, state: Dict[str, Any]) -> None:
        """Restore what training_state() saved; a state from another stage or model gives one clear error."""
        if state.get("stage") != self.opt.stage:
            raise CheckpointError(f"the resume state was saved in stage {state.get('stage')!r}, "
                                  f"not {self.opt.stage!r}")
        missing = [k for k in ("nets", "optimizers", "schedulers") if k not in state] + \
                  (["ema"] if self.opt.ema and "ema" not in state else [])
        if missing:
            raise CheckpointError(f"the resume state lacks {missing} (saved with other options?)")
        try:
            for net in self.nets:
                net.load_state_dict(state["nets"][net.__class__.__name__])
            if self.opt.ema:
                self.BaseNet_ema.load_state_dict(state["ema"])
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                scheduler.load_state_dict(saved)
            self.objective_vectors = state["objective_vectors"]
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"the resume state does not fit this model and options: {err}") from None
        counts = torch.as_tensor(state["objective_vectors_num"])
        self.objective_vectors_num = counts.to(self.device, torch.float32, copy=True)
        self.iter = int(state["iter"])
        self.best_iou = state["best_iou"]
