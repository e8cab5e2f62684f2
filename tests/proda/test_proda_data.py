"""ProDA loaders on tiny Cityscapes / GTA5 / SYNTHIA trees written in tmp_path: label maps,
normalisation, saved pseudo labels following the weak view, errors, create_dataset, DataProvider."""
import logging
import os

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from proda.data import (DataProvider, DatasetError, create_dataset, find_dataset_using_name,
                        get_composed_augmentations, loader_kwargs, saved_pseudo_labels)
from proda.data.cityscapes_dataset import Cityscapes_loader
from proda.data.gta5_dataset import GTA5_loader
from proda.data.synthia_dataset import Synthia_loader, read_class_channel
from proda.options import parse_opt

LOG = logging.getLogger("test_proda_data")
W, H = 64, 32
SMALL = ["--tgt_img_size", "64,32", "--src_img_size", "64,32", "--resize", "64", "--rcrop", "32,16",
         "--num_workers", "0", "--bs", "2"]

# raw ids written in 8-pixel-wide vertical stripes, and their train ids per protocol
CITY_RAW = [7, 8, 11, 12, 22, 24, 26, 33]
CITY_EXPECTED = {19: [0, 1, 2, 3, 9, 11, 13, 18],
                 16: [0, 1, 2, 3, 250, 10, 12, 15],
                 13: [0, 1, 2, 250, 250, 7, 9, 12]}
SYN_RAW = [3, 2, 21, 10, 11, 0, 16, 8]
SYN_EXPECTED = {19: [0, 2, 3, 11, 18, 250, 9, 13],
                16: [0, 2, 3, 10, 15, 250, 250, 12],
                13: [0, 2, 250, 7, 12, 250, 250, 9]}


def stripes(values, h=H, w=W):
    """H x W map whose 8-pixel-wide vertical stripes hold `values`; the top row is void (0)."""
    lbl = np.repeat(np.asarray(values), w // len(values))[None, :].repeat(h, 0)
    lbl[0] = 0
    return lbl


def expected_stripes(values):
    """What the loader must return for a stripes() label encoded to `values`."""
    lbl = stripes(values).astype(np.int64)
    lbl[0] = 250
    return lbl


def rgb(seed, h=H, w=W):
    """A random uint8 RGB image."""
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def write_cityscapes(root, n_train=3, n_val=2):
    """leftImg8bit/ and gtFine/ with a few 64x32 images in two cities."""
    paths = []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = "aachen" if i % 2 == 0 else "bochum"
            stem = f"{city}_{i:06d}_000019"
            for sub in ("leftImg8bit", "gtFine"):
                os.makedirs(root / sub / split / city, exist_ok=True)
            img_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            Image.fromarray(rgb(i + 10 * (split == "val"))).save(img_path)
            Image.fromarray(stripes(CITY_RAW).astype(np.uint8)).save(
                root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            paths.append(str(img_path))
    return paths


def write_gta5(root, n=3):
    """images/, labels/ (palette PNGs) and split.mat listing n ids."""
    os.makedirs(root / "images")
    os.makedirs(root / "labels")
    for i in range(1, n + 1):
        Image.fromarray(rgb(100 + i)).save(root / "images" / f"{i:05d}.png")
        lbl = Image.fromarray(stripes(CITY_RAW).astype(np.uint8))
        lbl.putpalette([v for c in range(256) for v in (c, 255 - c, 0)])
        lbl.save(root / "labels" / f"{i:05d}.png")
    ids = np.arange(1, n + 1).reshape(-1, 1)
    scipy.io.savemat(root / "split.mat", {"trainIds": ids[:-1], "valIds": ids[-1:], "testIds": ids[:0]})


def write_synthia(root, n=3):
    """RGB/ and GT/LABELS/ with 16-bit 3-channel labels (class in red, instance ids elsewhere)."""
    os.makedirs(root / "RGB")
    os.makedirs(root / "GT" / "LABELS")
    for i in range(n):
        Image.fromarray(rgb(200 + i)).save(root / "RGB" / f"{i:07d}.png")
        red = stripes(SYN_RAW).astype(np.uint16)
        green = np.full((H, W), 1000 + i, np.uint16)
        blue = np.full((H, W), 7, np.uint16)
        cv2.imwrite(str(root / "GT" / "LABELS" / f"{i:07d}.png"), np.dstack([blue, green, red]))  # BGR on disk


@pytest.fixture
def trees(tmp_path):
    """Tiny Cityscapes, GTA5 and SYNTHIA trees; returns the path arguments."""
    write_cityscapes(tmp_path / "cityscapes")
    write_gta5(tmp_path / "GTA5")
    write_synthia(tmp_path / "SYNTHIA")
    return tmp_path


def opts(tmp_path, *extra):
    """Options for the tiny trees."""
    return parse_opt(SMALL + ["--tgt_rootpath", str(tmp_path / "cityscapes"), "--src_rootpath",
                              str(tmp_path / "GTA5"), "--logdir", str(tmp_path / "logs")] + list(extra))


# ---------------------------------------------------------------- label maps and images

@pytest.mark.parametrize("n_class", [19, 16, 13])
def test_cityscapes_labels_and_image(trees, n_class):
    ds = Cityscapes_loader(opts(trees, "--n_class", str(n_class)), LOG, augmentations=None, split="val")
    item = ds[0]
    assert len(ds) == 2 and ds.n_classes == n_class and len(ds.class_names) == n_class + 1
    assert torch.equal(item["label"], torch.from_numpy(expected_stripes(CITY_EXPECTED[n_class])))
    raw = np.asarray(Image.open(ds.files[0]))
    expected_img = torch.from_numpy(raw.transpose(2, 0, 1).astype(np.float64) / 255.0).float()
    assert item["img"].dtype == torch.float32 and torch.equal(item["img"], expected_img)
    assert torch.equal(item["img_full"], expected_img)
    assert item["img_path"] == ds.files[0]
    assert set(item) == {"img", "img_full", "label", "img_path"}


def test_cityscapes_resizes_to_img_size(trees):
    """Bilinear image / nearest label resize to --tgt_img_size before encoding (reference order)."""
    ds = Cityscapes_loader(opts(trees, "--tgt_img_size", "32,16"), LOG, split="train")
    item = ds[1]
    raw_lbl = Image.open(ds.label_path(ds.files[1])).resize((32, 16), Image.Resampling.NEAREST)
    lut = dict(zip(CITY_RAW, CITY_EXPECTED[19]))
    expected = np.vectorize(lambda v: lut.get(v, 250))(np.asarray(raw_lbl))
    assert item["label"].shape == (16, 32) and np.array_equal(item["label"].numpy(), expected)
    img = np.asarray(Image.open(ds.files[1]).resize((32, 16), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.allclose(item["img"].numpy(), (img / 255.0).transpose(2, 0, 1).astype(np.float32))


def test_gta5_labels_and_split(trees):
    ds = GTA5_loader(opts(trees, "--n_class", "16"), LOG)  # GTA5 is always 19 classes
    assert len(ds) == 3 and ds.n_classes == 19
    item = ds[2]
    assert torch.equal(item["label"], torch.from_numpy(expected_stripes(CITY_EXPECTED[19])))
    assert item["img_path"].endswith(os.path.join("images", "00003.png"))
    raw = np.asarray(Image.open(item["img_path"]), dtype=np.float64)
    assert torch.allclose(item["img"], torch.from_numpy(raw.transpose(2, 0, 1) / 255.0).float())


def test_synthia_reader_returns_class_channel(tmp_path):
    write_synthia(tmp_path)
    lbl = read_class_channel(str(tmp_path / "GT" / "LABELS" / "0000001.png"))
    assert lbl.dtype == np.uint16 and np.array_equal(lbl, stripes(SYN_RAW))


@pytest.mark.parametrize("n_class", [19, 16, 13])
def test_synthia_labels(trees, n_class):
    opt = opts(trees, "--n_class", str(n_class), "--src_rootpath", str(trees / "SYNTHIA"))
    ds = Synthia_loader(opt, LOG)
    item = ds[0]
    assert torch.equal(item["label"], torch.from_numpy(expected_stripes(SYN_EXPECTED[n_class])))
    assert item["img_path"].endswith(os.path.join("RGB", "0000000.png"))


def test_synthia_resizes_16_bit_labels_like_the_reference(trees):
    """The reference resizes the uint16 class channel (PIL mode I;16) with nearest, then encodes."""
    opt = opts(trees, "--src_rootpath", str(trees / "SYNTHIA"), "--src_img_size", "100,50")
    item = Synthia_loader(opt, LOG)[1]
    raw = Image.fromarray(stripes(SYN_RAW).astype(np.uint16)).resize((100, 50), Image.Resampling.NEAREST)
    lut = dict(zip(SYN_RAW, SYN_EXPECTED[19]))
    expected = np.vectorize(lambda v: lut.get(v, 250))(np.asarray(raw))
    assert item["label"].shape == (50, 100) and np.array_equal(item["label"].numpy(), expected)


def test_decode_segmap_maps_16_classes_to_19_colours(trees):
    ds = Cityscapes_loader(opts(trees, "--n_class", "16"), LOG, split="val")
    rgb_map = ds.decode_segmap(np.array([[0, 9, 15, 250]]))
    # 16-class id 9 is sky (19-class 10), 15 is bicycle (19-class 18); 250 stays grey
    expected = np.array([[[128, 64, 128], [0, 130, 180], [119, 11, 32], [250, 250, 250]]]) / 255.0
    assert np.allclose(rgb_map, expected)


# ---------------------------------------------------------------- pseudo labels + weak view

def replay_weak(arr, weak, i, resample):
    """Apply sample i's collated weak_params (resize, crop, flip) to a full-size H x W map with PIL."""
    h, w = int(weak["RandomSized"][0][i]), int(weak["RandomSized"][1][i])
    y1, y2, x1, x2 = (int(v[i]) for v in weak["RandomCrop"])
    out = Image.fromarray(arr).resize((w, h), resample).crop((x1, y1, x2, y2))
    if bool(weak["RandomHorizontallyFlip"][i]):
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def test_weak_params_reproduce_weak_view_from_full_image(trees):
    """full2weak property: the collated weak_params turn the full image / label into the weak view."""
    opt = opts(trees)
    aug = Cityscapes_loader(opt, LOG, augmentations=get_composed_augmentations(opt), split="train")
    full = Cityscapes_loader(opt, LOG, augmentations=None, split="train")
    batch = default_collate([aug[i % 3] for i in range(6)])
    weak = batch["weak_params"]
    assert batch["img"].shape == (6, 3, 16, 32) and batch["img_strong"].shape == (6, 3, 16, 32)
    flips = set()
    for i in range(6):
        idx = i % 3
        full_lbl = full[idx]["label"].numpy().astype(np.uint8)
        assert np.array_equal(replay_weak(full_lbl, weak, i, Image.Resampling.NEAREST), batch["label"][i].numpy())
        full_img = np.asarray(Image.open(full.files[idx]))
        weak_img = np.stack([replay_weak(full_img[..., c], weak, i, Image.Resampling.BILINEAR) for c in range(3)])
        # PIL resizes RGB and single channels alike, so the replay is exact up to float rounding
        assert np.allclose(weak_img / 255.0, batch["img"][i].numpy(), atol=1e-6)
        assert torch.equal(batch["img_full"][i], full[idx]["img_full"])
        flips.add(bool(weak["RandomHorizontallyFlip"][i]))
    assert flips == {True, False}


def write_hard_pseudo(tmp_path, files, threshold_block=True):
    """Hard pseudo labels = the true train ids, with low confidence in a 8x8 block."""
    folder = tmp_path / "LP"
    os.makedirs(folder)
    lbl = expected_stripes(CITY_EXPECTED[19]).astype(np.uint8)
    conf = np.full((H, W), 0.99, np.float16)
    conf[8:16, 8:16] = 0.5
    for f in files:
        name = os.path.basename(f)
        Image.fromarray(lbl).save(folder / name)
        np.save(folder / name.replace(".png", "_conf.npy"), conf)
    return folder, lbl, conf


def test_hard_pseudo_labels_threshold(trees):
    ds0 = Cityscapes_loader(opts(trees), LOG, split="train")
    folder, lbl, conf = write_hard_pseudo(trees, ds0.files)
    opt = opts(trees, "--used_save_pseudo", "--path_LP", str(folder), "--threshold", "0.95")
    item = Cityscapes_loader(opt, LOG, split="train", pseudo_labels=saved_pseudo_labels(opt))[0]
    expected = np.where(conf <= 0.95, 250, lbl)
    assert torch.equal(item["lp"], torch.from_numpy(expected.astype(np.int64)))
    assert "lpsoft" not in item


def test_the_reference_call_reads_the_pseudo_labels_the_options_name(trees):
    """api.md's Cityscapes_loader(opt, logger, augmentations, split): without pseudo_labels, the
    train split reads what the options name (as the reference's loader does); val reads none."""
    ds0 = Cityscapes_loader(opts(trees), LOG, split="train")
    folder, lbl, conf = write_hard_pseudo(trees, ds0.files)
    opt = opts(trees, "--used_save_pseudo", "--path_LP", str(folder), "--threshold", "0.95")
    explicit = Cityscapes_loader(opt, LOG, split="train", pseudo_labels=saved_pseudo_labels(opt))[0]
    assert torch.equal(Cityscapes_loader(opt, LOG, split="train")[0]["lp"], explicit["lp"])
    assert "lp" not in Cityscapes_loader(opt, LOG, split="train", pseudo_labels=None)[0]
    assert "lp" not in Cityscapes_loader(opt, LOG, split="val")[0]


def test_hard_pseudo_labels_follow_weak_view(trees):
    ds0 = Cityscapes_loader(opts(trees), LOG, split="train")
    folder, lbl, conf = write_hard_pseudo(trees, ds0.files)
    opt = opts(trees, "--used_save_pseudo", "--path_LP", str(folder), "--threshold", "0.95")
    ds = Cityscapes_loader(opt, LOG, augmentations=get_composed_augmentations(opt), split="train",
                           pseudo_labels=saved_pseudo_labels(opt))
    batch = default_collate([ds[i] for i in range(3)])
    thresholded = np.where(conf <= 0.95, 250, lbl).astype(np.uint8)
    for i in range(3):
        assert np.array_equal(batch["lp"][i].numpy(), replay_weak(thresholded, batch["weak_params"], i,
                                                                   Image.Resampling.NEAREST))


def test_soft_pseudo_labels_follow_weak_view(trees):
    """Linear ramps stay exact under align_corners bilinear resizing, so lpsoft is predictable."""
    ds0 = Cityscapes_loader(opts(trees), LOG, split="train")
    folder = trees / "soft"
    os.makedirs(folder)
    h0, w0 = 8, 16  # saved at the network's output size
    ramp = np.zeros((19, h0, w0), np.float32)
    ramp[0] = np.linspace(0, 1, w0)[None, :]
    ramp[1] = np.linspace(0, 1, h0)[:, None]
    for f in ds0.files:
        np.save(folder / os.path.basename(f).replace(".png", ".npy"), ramp)
    opt = opts(trees, "--used_save_pseudo", "--proto_rectify", "--path_soft", str(folder))
    ds = Cityscapes_loader(opt, LOG, augmentations=get_composed_augmentations(opt), split="train",
                           pseudo_labels=saved_pseudo_labels(opt))
    batch = default_collate([ds[i % 3] for i in range(6)])
    weak = batch["weak_params"]
    assert batch["lpsoft"].shape == (6, 19, 16, 32) and "lp" not in batch
    for i in range(6):
        h, w = int(weak["RandomSized"][0][i]), int(weak["RandomSized"][1][i])
        y1, _, x1, _ = (int(v[i]) for v in weak["RandomCrop"])
        xs, ys = x1 + np.arange(32), y1 + np.arange(16)
        if bool(weak["RandomHorizontallyFlip"][i]):
            xs = xs[::-1]
        assert np.allclose(batch["lpsoft"][i, 0].numpy(), np.broadcast_to(xs / (w - 1), (16, 32)), atol=1e-5)
        assert np.allclose(batch["lpsoft"][i, 1].numpy(), np.broadcast_to((ys / (h - 1))[:, None], (16, 32)), atol=1e-5)


# ---------------------------------------------------------------- clear errors

def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="Cityscapes root not found: .*nowhere.*cityscapes-dataset.com"):
        Cityscapes_loader(parse_opt(SMALL + ["--tgt_rootpath", str(tmp_path / "nowhere")]), LOG)


def test_missing_gta5_split_file(trees):
    os.remove(trees / "GTA5" / "split.mat")
    with pytest.raises(FileNotFoundError, match="GTA5 split file not found: .*split.mat"):
        GTA5_loader(opts(trees), LOG)


def test_missing_synthia_labels(trees):
    os.rename(trees / "SYNTHIA" / "GT", trees / "SYNTHIA" / "GT_moved")
    with pytest.raises(DatasetError, match="SYNTHIA label folder not found: .*LABELS"):
        Synthia_loader(opts(trees, "--src_rootpath", str(trees / "SYNTHIA")), LOG)


def test_missing_soft_pseudo_label_names_file_and_command(trees):
    os.makedirs(trees / "soft")
    opt = opts(trees, "--used_save_pseudo", "--proto_rectify", "--path_soft", str(trees / "soft"))
    with pytest.raises(DatasetError, match=r"soft pseudo labels not found: .*aachen_000000_000019_leftImg8bit\.npy"
                                           r".*generate_pseudo_label --soft"):  # checked when the run starts
        Cityscapes_loader(opt, LOG, split="train", pseudo_labels=saved_pseudo_labels(opt))


def test_missing_pseudo_label_folder_and_conf_file(trees):
    opt = opts(trees, "--used_save_pseudo", "--path_LP", str(trees / "absent"))
    with pytest.raises(DatasetError, match="pseudo-label folder not found"):
        Cityscapes_loader(opt, LOG, split="train", pseudo_labels=saved_pseudo_labels(opt))
    folder, _, _ = write_hard_pseudo(trees, Cityscapes_loader(opts(trees), LOG).files)
    os.remove(next(folder.glob("*_conf.npy")))
    opt = opts(trees, "--used_save_pseudo", "--path_LP", str(folder), "--threshold", "0.9")
    with pytest.raises(DatasetError, match="pseudo-label confidences not found: .*_conf.npy"):
        Cityscapes_loader(opt, LOG, split="train", pseudo_labels=saved_pseudo_labels(opt))


# ---------------------------------------------------------------- loaders

def test_create_dataset_end_to_end(trees, caplog):
    opt = opts(trees)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        datasets = create_dataset(opt, LOG)
    assert "Found 3 train images" in caplog.text and "Found 2 val images" in caplog.text
    assert isinstance(datasets.source_train_loader, DataProvider)
    assert isinstance(datasets.source_train, find_dataset_using_name("gta5"))
    target = next(iter(datasets.target_train_loader))
    assert len(datasets.target_train_loader) == 1  # 3 images, batch 2, drop_last
    assert set(target) == {"img", "img_full", "label", "img_path", "img_strong", "params", "weak_params"}
    assert target["img"].shape == (2, 3, 16, 32) and target["img_full"].shape == (2, 3, 32, 64)
    assert target["label"].dtype == torch.int64 and target["label"].shape == (2, 16, 32)
    assert set(target["params"]) == {"Hflip", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "CutoutAbs"}
    assert isinstance(target["params"]["CutoutAbs"], list) and len(target["params"]["CutoutAbs"]) == 4
    assert target["params"]["Hflip"].dtype == torch.bool and target["params"]["Rotate"].shape == (2,)
    assert [len(target["weak_params"][k]) for k in ("RandomSized", "RandomCrop")] == [2, 4]
    source = datasets.source_train_loader.next()
    assert source["img"].shape == (2, 3, 16, 32) and source["label"].shape == (2, 16, 32)
    assert {"img_strong", "params"} <= set(source)
    val = next(iter(datasets.target_valid_loader))
    assert val["img"].shape == (2, 3, 32, 64) and "params" not in val


def test_create_dataset_synthia_source_noaug(trees):
    opt = opts(trees, "--src_dataset", "synthia", "--src_rootpath", str(trees / "SYNTHIA"), "--n_class", "16",
               "--noaug", "--noshuffle")
    datasets = create_dataset(opt, LOG)
    source = datasets.source_train_loader.next()
    assert set(source) == {"img", "label", "img_path"}
    assert torch.equal(source["label"][0], torch.from_numpy(expected_stripes(SYN_EXPECTED[16])))
    assert source["img_path"][0].endswith("0000000.png")


def test_worker_seeding_differs_per_worker_and_repeats(trees):
    """Two workers draw different augmentations; the same torch seed repeats them."""
    opt = opts(trees, "--num_workers", "2", "--bs", "1", "--noshuffle")
    ds = Cityscapes_loader(opt, LOG, augmentations=get_composed_augmentations(opt), split="train")

    def draws():
        torch.manual_seed(3)
        loader = DataLoader(ds, **loader_kwargs(opt, ds, False, False))
        return [(int(b["weak_params"]["RandomSized"][1][0]), tuple(int(v[0]) for v in b["params"]["CutoutAbs"]))
                for b in loader]

    first = draws()
    assert first == draws()
    assert first[0] != first[1]  # items 0 and 1 come from different workers


def test_distributed_runs_use_a_distributed_sampler(trees):
    """Inside a process group the train loaders shard with DistributedSampler; validation does not."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{trees / 'pg'}", rank=0, world_size=1)
    try:
        datasets = create_dataset(opts(trees, "--bs", "1"), LOG)
    finally:
        torch.distributed.destroy_process_group()
    sampler = datasets.target_train_loader.sampler
    assert isinstance(sampler, torch.utils.data.DistributedSampler) and sampler.shuffle
    assert isinstance(datasets.source_train_loader.loader.sampler, torch.utils.data.DistributedSampler)
    assert not isinstance(datasets.target_valid_loader.sampler, torch.utils.data.DistributedSampler)
    datasets.set_epoch(4)
    assert sampler.epoch == 4


def test_data_provider_restarts_when_exhausted(trees):
    ds = GTA5_loader(opts(trees), LOG)
    provider = DataProvider(ds, batch_size=2, shuffle=False, drop_last=True, num_workers=0)
    paths = [provider.next()["img_path"][0] for _ in range(3)]
    assert provider.epoch == 2 and paths[0] == paths[1] == paths[2]
    assert len(provider) == 1


def test_data_provider_and_create_dataset_refuse_too_few_images(trees):
    ds = GTA5_loader(opts(trees), LOG)
    provider = DataProvider(ds, batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="yields no batch: 3 images, batch size 4"):
        provider.next()
    with pytest.raises(ValueError, match="fewer than the batch size 4"):
        create_dataset(opts(trees, "--bs", "4"), LOG)
