"""VisDA-C: the loader on a tiny split in the challenge's layout, the configs, the source model and the stream."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from tent import cifar10c, conf, data, protocols, visda
from tent.conf_checks import assert_and_infer_cfg
from tent.errors import ConfigError, CorruptFileError, MissingResourceError
from tent.pycls_resnet import PyclsResNet

CFG_DIR = Path(__file__).resolve().parents[2] / "cfgs" / "visda"


def write_split(data_dir: Path, n: int = 12, split: str = "validation", size=(60, 40)) -> list:
    """DATA_DIR/VISDA-C/<split>/<class>/<file>.jpg and image_list.txt; each image's red level encodes its label."""
    root = data_dir / visda.FOLDER / split
    labels = [i % len(visda.CLASSES) for i in range(n)]
    lines = []
    for i, label in enumerate(labels):
        name = f"{visda.CLASSES[label]}/img_{i:03d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (20 * label, 128, 30)).save(root / name, quality=95)
        lines.append(f"{name} {label}")
    (root / "image_list.txt").write_text("\n".join(lines) + "\n")
    return labels


def test_validation_split_reads_224px_rgb_with_its_labels(tmp_path):
    labels = write_split(tmp_path)
    split = visda.load_split(str(tmp_path))
    assert len(split) == 12 and split.targets == labels
    for i in (0, 5, 11):
        x, y = split[i]
        assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1 and y == labels[i]
        assert round(x[0].mean().item() * 255 / 20) == labels[i]  # the red level survives resize and crop
        assert abs(x[1].mean().item() * 255 - 128) < 3


def test_subset_is_fixed_in_list_order(tmp_path):
    write_split(tmp_path)
    a, b = visda.load_target(5, str(tmp_path), seed=0), visda.load_target(5, str(tmp_path), seed=0)
    assert len(a) == 5 and a.names == b.names and a.names == sorted(a.names)
    assert visda.load_target(5, str(tmp_path), seed=1).names != a.names


def test_missing_list_and_missing_image_are_one_line(tmp_path):
    with pytest.raises(MissingResourceError) as exc:
        visda.load_split(str(tmp_path))
    assert "image_list.txt" in str(exc.value) and "validation.tar" in str(exc.value) and "\n" not in str(exc.value)
    write_split(tmp_path)
    (tmp_path / visda.FOLDER / "validation" / "bus" / "img_002.jpg").unlink()
    with pytest.raises(MissingResourceError, match="1 of the 12 images .*bus/img_002.jpg"):
        visda.load_split(str(tmp_path))


def test_a_malformed_list_line_is_named(tmp_path):
    write_split(tmp_path)
    path = tmp_path / visda.FOLDER / "validation" / "image_list.txt"
    path.write_text(path.read_text() + "car/x.jpg 12\n")
    with pytest.raises(CorruptFileError, match="line 13"):
        visda.load_split(str(tmp_path))


@pytest.mark.usefixtures("fresh_cfg")
@pytest.mark.parametrize("method", ["source", "norm", "tent"])
def test_configs_hold_the_papers_settings(method):
    conf.merge_from_file(str(CFG_DIR / f"{method}.yaml"))
    c = conf.cfg
    assert_and_infer_cfg(c)
    assert (c.CORRUPTION.DATASET, list(c.CORRUPTION.TYPE), c.MODEL.ARCH, c.MODEL.ADAPTATION) == \
        ("visda", ["clean"], "pycls_R50", method)
    assert (c.TEST.BATCH_SIZE, c.OPTIM.METHOD, c.OPTIM.LR) == (128, "Adam", 1e-3)
    assert data.num_examples(c) == visda.VALIDATION_SIZE
    c.merge_from_list(["CORRUPTION.TYPE", ["fog"]])
    with pytest.raises(ConfigError, match="CORRUPTION.TYPE"):
        assert_and_infer_cfg(c)


def save_source_model(ckpt_dir: Path) -> None:
    """A random 12-class PyclsResNet-50 in pycls's checkpoint format at CKPT_DIR/visda/pycls_R50.pt."""
    torch.manual_seed(0)
    path = visda.checkpoint_path(str(ckpt_dir))
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "model_state": PyclsResNet(50, 12).state_dict()}, path)


def test_source_model_loads_weights_only_and_names_its_recipe(tmp_path):
    with pytest.raises(MissingResourceError, match="fine-tune pycls's ImageNet ResNet-50"):
        visda.load_source_model("pycls_R50", str(tmp_path))
    with pytest.raises(ConfigError, match="MODEL.ARCH"):
        visda.load_source_model("Standard_R50", str(tmp_path))
    save_source_model(tmp_path)
    model = visda.load_source_model("pycls_R50", str(tmp_path))
    assert model.head.fc.out_features == 12 and not model.training


@pytest.mark.slow  # a ResNet-50 forward and backward on the CPU: ~30 s on 2 cores
@pytest.mark.usefixtures("fresh_cfg")
def test_tent_adapts_on_the_shuffled_validation_stream(tmp_path):
    """The stream reads the split through the data dispatch, shuffles it once, and tent changes the model."""
    from tent.methods import prepare_model, setup_model
    from tent.stream import evaluate_model

    write_split(tmp_path, n=6)
    save_source_model(tmp_path / "ckpt")
    conf.merge_from_file(str(CFG_DIR / "tent.yaml"))
    c = conf.cfg
    c.merge_from_list(["DATA_DIR", str(tmp_path), "TEST.BATCH_SIZE", 3])
    piece = protocols.plan("reset_each_shift", ["clean"], [1])[0]
    part = data.load_part(c, "reset_each_shift", "clean", 1)
    assert isinstance(part, visda.VisdaList) and len(part) == 6
    order = protocols.piece_data(piece, "reset_each_shift", lambda n, s: part, 0., c.RNG_SEED).order
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    source = visda.load_source_model("pycls_R50", str(tmp_path / "ckpt"))
    before = source.s1.b1.f.a_bn.weight.clone()
    model = setup_model("tent", prepare_model(source, torch.device("cpu"), c), c)
    done = evaluate_model(model, "tent", [piece], torch.device("cpu"), c)
    assert done["tent"][0].total == [6] and not torch.equal(before, model.model.s1.b1.f.a_bn.weight)


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_cfg")
def test_command_line_runs_the_tent_config(tmp_path):
    write_split(tmp_path, n=4)
    save_source_model(tmp_path / "ckpt")
    results = cifar10c.evaluate("test", ["--cfg", str(CFG_DIR / "tent.yaml"), "DATA_DIR", str(tmp_path),
                                         "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "out"),
                                         "TEST.BATCH_SIZE", "2"])
    assert list(results) == ["tent"] and results["tent"][1]["clean"] in (0, .25, .5, .75, 1)
