"""ProDA augmentations: the weak view's transforms record what they drew (and the crop never
crashes), and RandAugmentMC's recorded parameters replay its geometric ops exactly."""
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.data import default_collate

from proda.data.augmentations import Compose, RandomCrop, RandomHorizontallyFlip, RandomSized
from proda.data.randaugment import (GEOMETRIC, UNSET, Cutout, RandAugmentMC, SolarizeAdd,
                                    fixmatch_augment_pool)

GREY = (127, 127, 127)


def rgb(h, w, seed=0):
    """A random uint8 RGB image."""
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def pil_maps(h, w):
    """An RGB image, a label map and a second label map, all h x w."""
    lbl = (np.arange(h * w).reshape(h, w) % 19).astype(np.uint8)
    return Image.fromarray(rgb(h, w)), Image.fromarray(lbl), Image.fromarray(lbl[::-1].copy())


def test_compose_records_params_and_transforms_labels_alike():
    img, lbl, lp = rgb(32, 64), (np.arange(32 * 64).reshape(32, 64) % 19).astype(np.uint8), None
    aug = Compose([RandomSized(64), RandomCrop([32, 16]), RandomHorizontallyFlip(0.5)])
    seen_flips = set()
    for seed in range(8):
        random.seed(seed)
        out_img, out_lbl, out_lp, out_soft, params = aug(img, lbl, lp)
        # the draws come from python `random`, in the reference's order
        random.seed(seed)
        w = int(random.uniform(0.5, 1.5) * 64)
        h = int(w / 2.0)
        x1, y1 = random.randint(0, w - 32), random.randint(0, h - 16)
        flip = random.random() < 0.5
        assert params == {"RandomSized": (h, w), "RandomCrop": (y1, y1 + 16, x1, x1 + 32),
                          "RandomHorizontallyFlip": flip}
        expected = Image.fromarray(lbl).resize((w, h), Image.Resampling.NEAREST).crop((x1, y1, x1 + 32, y1 + 16))
        if flip:
            expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert out_lbl.dtype == np.uint8 and np.array_equal(out_lbl, np.asarray(expected))
        assert out_img.shape == (16, 32, 3) and out_lp is None and out_soft is None
        seen_flips.add(flip)
    assert seen_flips == {True, False}


def test_random_crop_of_exact_size_records_full_crop_without_drawing():
    img, lbl, lp = pil_maps(16, 32)
    random.seed(5)
    state = random.getstate()
    out = RandomCrop((32, 16))(img, lbl, lp, None, {})
    assert len(out) == 5 and out[4] == {"RandomCrop": (0, 16, 0, 32)}
    assert np.array_equal(np.asarray(out[1]), np.asarray(lbl)) and random.getstate() == state


def test_random_crop_of_smaller_image_resizes_and_records_it():
    """The reference crashed here ('bolinear' typo, 4-tuple without params)."""
    img, lbl, lp = pil_maps(12, 40)  # narrower than the crop height
    soft = torch.rand(19, 12, 40)
    out_img, out_lbl, out_lp, out_soft, params = RandomCrop((32, 16))(img, lbl, lp, soft, {"RandomSized": (12, 40)})
    assert params == {"RandomSized": (16, 32), "RandomCrop": (0, 16, 0, 32)}
    assert out_img.size == out_lbl.size == out_lp.size == (32, 16) and out_soft.shape == (19, 16, 32)
    assert np.array_equal(np.asarray(out_lbl), np.asarray(lbl.resize((32, 16), Image.Resampling.NEAREST)))
    assert torch.allclose(out_soft[:, 0, 0], soft[:, 0, 0]) and torch.allclose(out_soft[:, -1, -1], soft[:, -1, -1])


def test_flip_and_sized_move_soft_labels_with_the_image():
    img, lbl, lp = pil_maps(8, 16)
    soft = torch.arange(8 * 16, dtype=torch.float32).reshape(1, 8, 16).repeat(2, 1, 1)
    random.seed(0)
    _, _, _, flipped, params = RandomHorizontallyFlip(1.0)(img, lbl, lp, soft, {})
    assert params["RandomHorizontallyFlip"] is True and torch.equal(flipped, soft.flip(2))
    _, out_lbl, out_lp, resized, params = RandomSized(16)(img, lbl, lp, soft, {})
    h, w = params["RandomSized"]
    assert out_lbl.size == out_lp.size == (w, h) and resized.shape == (2, h, w)


def test_compose_brings_soft_labels_to_image_size_first():
    img = rgb(16, 32)
    lbl = np.zeros((16, 32), np.uint8)
    soft = np.random.rand(19, 4, 8).astype(np.float32)  # saved at the network's output size
    _, _, _, out, params = Compose([RandomHorizontallyFlip(0.0)])(img, lbl, None, soft)
    assert out.shape == (19, 16, 32) and np.allclose(out[:, 0, 0].numpy(), soft[:, 0, 0])
    with pytest.raises(ValueError, match="sizes differ"):
        Compose([RandomHorizontallyFlip(0.0)])(img, lbl[:8])


def replay(img, params, name, value):
    """Redo RandAugmentMC's flip, one recorded geometric op and the cutout with PIL."""
    if params["Hflip"]:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if value != UNSET:
        bilinear = Image.Resampling.BILINEAR
        coeffs = {"ShearX": (1, value, 0, 0, 1, 0), "ShearY": (1, 0, 0, value, 1, 0),
                  "TranslateX": (1, 0, value, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, value)}
        if name == "Rotate":
            img = img.rotate(value, resample=bilinear, fillcolor=GREY)
        else:
            img = img.transform(img.size, Image.Transform.AFFINE, coeffs[name], resample=bilinear, fillcolor=GREY)
    img = img.copy()
    ImageDraw.Draw(img).rectangle(tuple(params["CutoutAbs"]), GREY)
    return img


@pytest.mark.parametrize("name", GEOMETRIC)
def test_randaugment_records_what_replays_its_geometric_op(name):
    img = Image.fromarray(rgb(24, 40, seed=1))
    op = next(entry for entry in fixmatch_augment_pool() if entry[0].__name__ == name)
    randaug = RandAugmentMC(1, 10)
    randaug.augment_pool = [op]
    applied = 0
    for seed in range(12):
        random.seed(seed)
        np.random.seed(seed)
        out, params = randaug(img)
        value = params[name]
        applied += value != UNSET
        assert np.array_equal(np.asarray(out), np.asarray(replay(img, params, name, value)))
        if value != UNSET:
            limit = {"Rotate": 30, "ShearX": 0.3, "ShearY": 0.3, "TranslateX": 0.3 * 40, "TranslateY": 0.3 * 24}[name]
            assert 0 < abs(value) <= limit
            # the geometric op matters: leaving it out does not give the same image
            assert not np.array_equal(np.asarray(out), np.asarray(replay(img, params, name, UNSET)))
    assert 0 < applied < 12


def test_randaugment_params_collate_and_repeat_under_the_same_seeds():
    img = Image.fromarray(rgb(24, 40, seed=2))
    randaug = RandAugmentMC(2, 10)
    draws = []
    for seed in (0, 0, 1, 2):
        random.seed(seed)
        np.random.seed(seed)
        draws.append(randaug(img))
    assert np.array_equal(np.asarray(draws[0][0]), np.asarray(draws[1][0])) and draws[0][1] == draws[1][1]
    batch = default_collate([p for _, p in draws])
    assert set(batch) == {"Hflip", *GEOMETRIC, "CutoutAbs"}
    assert batch["Hflip"].shape == (4,) and len(batch["CutoutAbs"]) == 4
    x0, y0, x1, y1 = (t.numpy() for t in batch["CutoutAbs"])
    assert np.all(x1 - x0 <= 24 // 3) and np.all(y1 > y0)


def test_randaugment_rejects_bad_settings_and_fixed_ops_run():
    with pytest.raises(AssertionError):
        RandAugmentMC(2, 11)
    img = Image.fromarray(rgb(8, 8, seed=3))
    out, threshold = SolarizeAdd(img, v=5, max_v=110)  # used np.int in the reference
    assert threshold == 128 and out.size == (8, 8)
    assert Cutout(img, v=0, max_v=0.2) == (img, None)
    out, box = Cutout(img, v=10, max_v=0.5)
    assert np.all(np.asarray(out)[box[1]:box[3], box[0]:box[2]] == 127)
