"""ProDA's vectorised prototype operations equal simple per-class loops (the reference's form),
and the view mappings move labels exactly as the data pipeline moves images."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from reference_loops import (loop_distance, loop_full_to_weak, loop_mean_vectors, loop_one_hot, loop_strong_transform,
                             loop_update)
from proda.data.augmentations import Compose, RandomCrop, RandomHorizontallyFlip, RandomSized
from proda.data.randaugment import GEOMETRIC, UNSET, RandAugmentMC, affine_sample, fixmatch_augment_pool
from proda.data.replay import full_to_weak, strong_transform
from proda.models.prototypes import class_mean_vectors, one_hot_labels, prototype_distance, update_prototypes

K = 5  # classes


def rel_err(a, b):
    """Largest error relative to the largest magnitude of the expected tensor."""
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------- distances and means

def test_prototype_distance_equals_loop_on_spread_features():
    feat, protos = torch.randn(2, 256, 12, 20), torch.randn(K, 256)
    assert rel_err(prototype_distance(feat, protos), loop_distance(feat, protos)) <= 1e-5


def test_prototype_distance_stays_exact_for_features_next_to_a_prototype():
    # tight clusters: |x - p| is 1% of |p|, where |x|^2 - 2xp + |p|^2 alone loses ~1e-3 relative precision
    protos = torch.randn(K, 256)
    cls = torch.randint(0, K, (2, 12, 20))
    feat = protos[cls].permute(0, 3, 1, 2) + 0.01 * torch.randn(2, 256, 12, 20)
    feat[:, :, :4] = torch.randn(2, 256, 4, 20)  # some pixels far from every prototype
    got, want = prototype_distance(feat, protos), loop_distance(feat, protos)
    assert ((got - want).abs() / want).max().item() <= 1e-5  # per element, also for the small distances


def test_prototype_distance_gradient_equals_loop():
    # the consistency loss backpropagates through the student's distances, near pixels included
    protos = torch.randn(K, 256)
    feat = torch.randn(2, 256, 6, 8)
    feat[:, :, :2] = protos[1].view(1, -1, 1, 1) + 0.01 * torch.randn(2, 256, 2, 8)
    weights = torch.randn(2, K, 6, 8)
    grads = []
    for distance in (prototype_distance, loop_distance):
        x = feat.clone().requires_grad_(True)
        (distance(x, protos) * weights).sum().backward()
        grads.append(x.grad)
    assert rel_err(grads[0], grads[1]) <= 1e-5


def test_one_hot_labels_equals_loop_and_sends_ignore_to_last_channel():
    label = torch.randint(0, K + 1, (2, 1, 6, 7)).float()
    label[label == K] = 250
    one_hot = one_hot_labels(label, K)
    assert torch.equal(one_hot, loop_one_hot(label, K))
    assert torch.equal(one_hot[:, K], (label[:, 0] == 250).float())


@pytest.mark.parametrize("with_labels,thresh", [(False, None), (True, None), (False, 0.5)])
def test_class_mean_vectors_equal_loop_in_reference_order(with_labels, thresh):
    feat = torch.randn(3, 256, 10, 12)
    outputs = torch.randn(3, K, 10, 12) * 2
    outputs[1, 2] += 10  # image 1 predicts class 2 nearly everywhere: other classes fall under 10 pixels
    labels = None
    if with_labels:
        labels = torch.randint(0, K + 1, (3, 1, 10, 12)).float()
        labels[labels == K] = 250
    vectors, valid = class_mean_vectors(feat, outputs, K, labels, thresh)
    want_vectors, want_ids = loop_mean_vectors(feat, outputs, K, labels, thresh)
    assert valid.nonzero()[:, 1].tolist() == want_ids and 0 < len(want_ids) < 3 * K
    assert rel_err(vectors[valid], torch.stack(want_vectors).flatten(1)) <= 1e-5
    assert torch.all(vectors[~valid] == 0)


@pytest.mark.parametrize("name,start_mean", [("moving_average", False), ("moving_average", True), ("mean", True)])
def test_batch_prototype_update_equals_sequential_loop(name, start_mean):
    protos, counts = torch.randn(K, 256), torch.tensor([0.0, 98.0, 2999.0, 5.0, 150.0])
    ids = torch.tensor([1, 2, 1, 0, 1, 2, 4, 2, 3])  # repeats cross the 100 and 3000 boundaries
    vectors = torch.randn(len(ids), 256)
    vectors[3] = 0  # an all-zero vector is skipped
    want_p, want_c = protos.clone(), counts.clone()
    loop_update(want_p, want_c, vectors, ids.tolist(), 0.3, name, start_mean)
    update_prototypes(protos, counts, vectors, ids, 0.3, name=name, start_mean=start_mean)
    assert rel_err(protos, want_p) <= 1e-6 and torch.equal(counts, want_c)
    assert counts[0] == 0 and counts[2] == 3000  # class 0 only got the zero vector; the cap holds


def test_batch_prototype_update_rejects_unknown_mode():
    with pytest.raises(NotImplementedError):
        update_prototypes(torch.zeros(K, 4), torch.zeros(K), torch.ones(1, 4), torch.tensor([0]), 0.1, name="median")


# ----------------------------------------------------------------------------- full image -> weak view

def test_full_to_weak_equals_loop_and_is_exact_without_resize():
    weak = default_collate([{"RandomSized": (48, 64), "RandomCrop": (8, 40, 16, 48), "RandomHorizontallyFlip": True},
                            {"RandomSized": (60, 80), "RandomCrop": (4, 36, 0, 32), "RandomHorizontallyFlip": False}])
    feat = torch.randn(2, 7, 12, 16)
    assert torch.equal(full_to_weak(feat, weak), loop_full_to_weak(feat, weak))
    # image 0 keeps the full size (48 x 64): its weak view is an exact crop of the 1/4 map, mirrored
    assert torch.equal(full_to_weak(feat, weak)[0], feat[0, :, 2:10, 4:12].flip(2))


def test_full_to_weak_follows_the_data_pipeline_weak_view():
    # x and y coordinate ramps of a 64 x 96 image go through RandomSized / RandomCrop / flip;
    # full2weak on the 1/4-resolution ramps must land on the same coordinates (a flip or crop
    # off by one would be off by tens of pixels)
    h, w = 64, 96
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    aug = Compose([RandomSized(96), RandomCrop((48, 32)), RandomHorizontallyFlip(0.5)])
    full = torch.from_numpy(np.stack([xs, ys]))[None]
    quarter = F.interpolate(full, size=(h // 4, w // 4), mode="bilinear", align_corners=True)
    flips = set()
    for seed in range(12):
        random.seed(seed)
        maps = []
        for ramp in (xs, ys):  # 'L' images hold 0..255: the ramps fit
            _, weak_ramp, _, _, params = aug(ramp.astype(np.uint8), ramp.astype(np.uint8))
            maps.append(torch.from_numpy(weak_ramp.astype(np.float32)))
            random.seed(seed)
        flips.add(params["RandomHorizontallyFlip"])
        expected = F.avg_pool2d(torch.stack(maps)[None], 4)  # the weak view at 1/4 resolution
        got = full_to_weak(quarter, default_collate([params]))
        assert got.shape == expected.shape
        # in full-resolution pixels: the reference's align_corners=True resizing and int() crop offsets
        # (vs PIL's pixel-centre resizing) leave up to 2 quarter-resolution pixels at the far edges
        error = (got - expected).abs()
        assert error.max().item() < 8 and error.mean().item() < 4
    assert flips == {True, False}


# ----------------------------------------------------------------------------- weak view -> strong view

CODES = np.array([20, 50, 80, 110, 150, 180, 210, 240])  # grey levels of the classes; 127 is RandAugment's fill


def block_labels(h, w, seed):
    """Label map of random 8 x 8 blocks (so most pixels are away from a class border)."""
    small = np.random.RandomState(seed).randint(0, len(CODES), ((h + 7) // 8, (w + 7) // 8))
    return np.kron(small, np.ones((8, 8), dtype=np.int64))[:h, :w]


def strong_view_of_labels(lbl, op_name, seed):
    """Run RandAugmentMC (flip, the one op, cutout) on the label map drawn as a grey image; decode it."""
    op = next(entry for entry in fixmatch_augment_pool() if entry[0].__name__ == op_name)
    randaug = RandAugmentMC(1, 10)
    randaug.augment_pool = [op]
    random.seed(seed)
    np.random.seed(seed)
    img, params = randaug(Image.fromarray(np.repeat(CODES[lbl][:, :, None], 3, 2).astype(np.uint8)))
    grey = np.asarray(img)[:, :, 0].astype(np.int64)
    decoded = np.full(grey.shape, -1)  # -1: a blend of two classes (bilinear at a border)
    decoded[grey == 127] = 250
    for k, code in enumerate(CODES):
        decoded[grey == code] = k
    return decoded, params


def cutout_far_edges(params, h, w):
    """PIL's rectangle includes x1 and y1; label_strong_T's slice stops before them (a kept off-by-one)."""
    x0, y0, x1, y1 = params["CutoutAbs"]
    edges = np.zeros((h, w), dtype=bool)
    edges[y0:y1 + 1, min(x1, w - 1)] = x1 < w
    edges[min(y1, h - 1), x0:x1 + 1] |= y1 < h
    return edges


def interior(labels):
    """Pixels whose 3 x 3 neighbourhood has one label (nearest and bilinear sampling agree there)."""
    pad = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    same = np.ones_like(labels, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= pad[dy:dy + h, dx:dx + w] == labels
    return same


@pytest.mark.parametrize("op_name", GEOMETRIC)
def test_label_strong_T_moves_labels_as_randaugment_moves_the_image(op_name):
    # TranslateX on a square map only: affine_sample scales x translations by W/H (a kept oddity)
    h, w = (48, 48) if op_name == "TranslateX" else (40, 56)
    checked = mismatched = interior_mismatched = applied = 0
    for seed in range(12):
        lbl = block_labels(h, w, seed)
        decoded, params = strong_view_of_labels(lbl, op_name, seed)
        applied += params[op_name] != UNSET
        ours = strong_transform(torch.from_numpy(lbl).float()[None, None], default_collate([params]), 250)[0, 0]
        ours = ours.numpy().astype(np.int64)
        clean = (decoded >= 0) & ~cutout_far_edges(params, h, w)
        checked += clean.sum()
        mismatched += (clean & (decoded != ours)).sum()
        interior_mismatched += (clean & interior(ours) & (decoded != ours)).sum()
    assert applied >= 3 and checked > 0.9 * 12 * h * w
    if op_name.startswith("Translate"):  # whole-pixel shifts: exact
        assert mismatched == 0
    else:  # nearest (labels) vs bilinear (image) differ only along class borders
        assert mismatched <= 2e-3 * checked and interior_mismatched <= 2


def test_label_strong_T_moves_every_channel_of_a_distance_map_like_the_labels():
    random.seed(0)
    np.random.seed(0)
    randaug = RandAugmentMC(2, 10)
    params = default_collate([randaug(Image.new("RGB", (64, 48)))[1] for _ in range(4)])
    lbl = torch.from_numpy(np.stack([block_labels(12, 16, s) % K for s in range(4)])).float()[:, None]
    moved_labels = strong_transform(lbl, params, 250, scale=4)
    moved_one_hot = strong_transform(one_hot_labels(lbl, K)[:, :K], params, 250, scale=4)
    inside = moved_labels[:, 0] != 250
    assert inside.float().mean() > 0.3 and torch.all(moved_one_hot[:, 0][~inside] == 250)
    assert torch.equal(moved_one_hot.argmax(1)[inside], moved_labels[:, 0][inside].long())


def test_label_strong_T_equals_reference_loop_for_random_batches():
    randaug = RandAugmentMC(2, 10)
    geometric_ops = 0
    for seed in range(8):
        random.seed(seed)
        np.random.seed(seed)
        params = default_collate([randaug(Image.new("RGB", (64, 48)))[1] for _ in range(3)])
        geometric_ops += sum(int((params[name] != UNSET).sum()) for name in GEOMETRIC)
        lbl = torch.randint(0, K, (3, 1, 12, 16)).float()
        dist = torch.rand(3, K, 12, 16) * 3
        for scale in (1, 4):
            assert torch.equal(strong_transform(lbl, params, 250, scale), loop_strong_transform(lbl, params, 250, scale))
            assert torch.equal(strong_transform(dist, params, 250, scale), loop_strong_transform(dist, params, 250, scale))
    assert geometric_ops >= 5


def test_a_batch_without_any_valid_class_leaves_the_prototypes_alone():
    """No class predicted on >= 10 pixels (a tiny image): nothing to update, no error."""
    from proda.models.prototypes import Prototypes
    protos = Prototypes(4, torch.device("cpu"))
    before = protos.vectors.clone(), protos.counts.clone()
    protos.update(torch.zeros(0, 256), torch.zeros(0, dtype=torch.long), 0.1)
    protos.update([], [], 0.1)
    assert torch.equal(protos.vectors, before[0]) and torch.equal(protos.counts, before[1])
