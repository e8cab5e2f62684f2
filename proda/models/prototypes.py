"""ProDA's class prototypes: prototypical pseudo-label denoising in one place.

A prototype is the mean 256-d feature ('feat' of Deeplab) of one class. Stage 1 weights each
pixel's soft pseudo label by a softmax over its negative distances to the prototypes
(`rectification_weights`, `rectify_pseudo_labels`), and keeps the prototypes current with a
momentum update from the EMA network's class means (`Prototypes.update`); calc_prototype.py
starts them as plain means. `Prototypes` holds the vectors and counts (the reference's
`objective_vectors` and `objective_vectors_num`) and gathers updates from every process.

The operations are vectorised (no Python loops over classes or pixels; loops run at most over
the batch) and equal the reference's per-class loops (tests/proda/reference_loops.py).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from dacommon.distributed import all_gather_rows
from proda.utils import IGNORE_INDEX

FEAT_CHANNELS = 256          # width of Deeplab's 'feat', where the prototypes live
PROTO_COUNT_CAP = 3000       # objective_vectors_num never exceeds this
PROTO_MEAN_WARMUP = 100      # with start_mean, a class's first 100 updates are plain means
MIN_CLASS_PIXELS = 10        # calculate_mean_vector skips classes predicted on fewer pixels
NEAR_PAIR_TOL = 0.1          # prototype_distance redoes pixels with d^2 < tol * (|x|^2 + |p|^2) in float64


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
    vectors = vectors.flatten(1).to(prototypes.device, prototypes.dtype)  # N x C (x 1 x 1); N may be 0
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


def rectify_pseudo_labels(soft_labels: torch.Tensor, weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """Denoise: hard labels N x 1 x H x W of weights * soft labels; 250 where the renormalised maximum < threshold."""
    rectified = weights * soft_labels
    labels = rectified.max(1, keepdim=True)[1]
    rectified = rectified / rectified.sum(1, keepdim=True)
    confidence = rectified.max(1, keepdim=True)[0]
    labels.masked_fill_(confidence < threshold, IGNORE_INDEX)
    return labels


class Prototypes:
    """The class prototypes (n_class x 256, float32 on `device`) and how many vectors each has seen."""

    def __init__(self, n_class: int, device: torch.device) -> None:
        self.n_class = n_class
        self.device = device
        self.vectors = torch.zeros([n_class, FEAT_CHANNELS])
        self.counts = torch.zeros([n_class], device=device)

    @property
    def vectors(self) -> torch.Tensor:
        """The prototypes, n_class x 256."""
        return self._vectors

    @vectors.setter
    def vectors(self, value: Any) -> None:
        """Accept prototypes from anywhere (a loaded file, another device) as float32 on the model's device."""
        value = torch.as_tensor(value).detach().to(self.device, torch.float32, copy=True)  # updated in place later
        if tuple(value.shape) != (self.n_class, FEAT_CHANNELS):
            raise ValueError(f"prototypes must be {self.n_class} x {FEAT_CHANNELS}, got {tuple(value.shape)}")
        self._vectors = value

    def distance(self, feat: torch.Tensor) -> torch.Tensor:
        """Distance of each pixel feature to each prototype, N x n_class x H x W."""
        return prototype_distance(feat, self.vectors)

    def class_means(self, feat: torch.Tensor, outputs: torch.Tensor, labels: Optional[torch.Tensor] = None,
                    thresh: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The valid per-image class means of a batch (M x 256) and their class ids, image-major."""
        return valid_vectors(*class_mean_vectors(feat, outputs, self.n_class, labels, thresh))

    def update(self, vectors: Any, ids: Any, momentum: float, name: str = "moving_average",
               start_mean: bool = True, gather: bool = True) -> None:
        """Apply (id, vector) pairs in order, as the reference's loop does one by one.

        With gather, under torchrun, the pairs of every process are applied in rank order on every
        process, so all copies stay identical. `vectors` may be the reference's list of C x 1 x 1 tensors.
        """
        if isinstance(vectors, (list, tuple)):
            vectors = [torch.as_tensor(v).reshape(-1) for v in vectors]
            vectors = torch.stack(vectors) if vectors else torch.zeros(0, FEAT_CHANNELS)
        vectors = torch.as_tensor(vectors, dtype=torch.float32, device=self.device)
        vectors = vectors.reshape(vectors.shape[0], -1) if vectors.numel() else vectors.reshape(0, FEAT_CHANNELS)
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1)
        if gather:
            vectors, ids = all_gather_rows(vectors, ids)
        update_prototypes(self.vectors, self.counts, vectors, ids, momentum, name=name, start_mean=start_mean)
