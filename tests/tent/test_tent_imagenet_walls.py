"""What a new user meets on the ImageNet-C and checkpoint-download paths: one short sentence each.

A missing image of robustbench's 5,000-image list, a partly extracted folder read in full
(CORRUPTION.NUM_EX -1), a checkpoint that could not be downloaded, and robustbench's CIFAR-10
`Standard` file under its Google Drive name `natural.pt.tar`; each on tiny files in the real layout.
"""
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tent  # noqa: F401  (installs the autoattack alias robustbench needs)
from tent import imagenetc, models
from tent.data import load_corruption
from tent.errors import MissingResourceError

SHORT = 300  # characters besides the paths: one short sentence, where the old messages ran to 1.3 KB and 11 KB


def save_image(path: Path, value: int, size: int = 8) -> None:
    """A flat image under an ImageNet-C file name (PNG content: PIL reads by content, losslessly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format="PNG")


def one_sentence(message: str, tmp_path: Path) -> bool:
    """No newline, no traceback text, short (the test's own folder, named in it, not counted)."""
    return "\n" not in message and "Traceback" not in message and len(message.replace(str(tmp_path), "")) < SHORT


def test_a_missing_listed_image_is_named_with_what_to_do(tmp_path):
    """robustbench's list: the first missing file is named with the count, and the archive to extract again."""
    listed = imagenetc.robustbench_list()
    folder = tmp_path / "ImageNet-C" / "fog" / "3"
    for wnid in {rel.split("/")[0] for rel in listed}:  # every class folder the list names (as robustbench needs)
        (folder / wnid).mkdir(parents=True)
    for k, rel in enumerate(listed[:2]):  # the 3rd to 5th images are missing
        save_image(folder / rel, k)
    with pytest.raises(MissingResourceError) as err:
        load_corruption("imagenet", 5, 3, str(tmp_path), "fog")
    message = str(err.value)
    assert one_sentence(message, tmp_path), message
    assert str(folder / listed[2]) in message and "3 of the 5" in message
    assert "weather.tar" in message and "zenodo.org/records/2235448" in message
    for k, rel in enumerate(listed[2:5]):
        save_image(folder / rel, 10 + k)
    x, y = load_corruption("imagenet", 5, 3, str(tmp_path), "fog")  # complete: robustbench reads it
    assert x.shape == (5, 3, 8, 8) and (x[:, 0, 0, 0] * 255).round().tolist() == [0, 1, 10, 11, 12]
    absent = folder / listed[4000].split("/")[0]
    for image in absent.iterdir():
        image.unlink()
    absent.rmdir()  # a class folder robustbench's list names (beyond the first 5): its KeyError before
    with pytest.raises(MissingResourceError) as err:
        load_corruption("imagenet", 5, 3, str(tmp_path), "fog")
    assert one_sentence(str(err.value), tmp_path) and f"class folder {absent} is missing" in str(err.value)


def test_a_partly_extracted_folder_read_in_full_names_the_folder(tmp_path):
    """Empty class folders under NUM_EX -1: the folder, how many are empty and the archive, not 1,000 wnids."""
    folder = tmp_path / "ImageNet-C" / "gaussian_noise" / "5"
    wnids = sorted(imagenetc.imagenet_classes())
    for wnid in wnids:
        (folder / wnid).mkdir(parents=True)
    save_image(folder / wnids[0] / "a.JPEG", 1)
    with pytest.raises(MissingResourceError) as err:
        imagenetc.imagenetc_folder(str(tmp_path), "gaussian_noise", 5)
    message = str(err.value)
    assert one_sentence(message, tmp_path), message
    assert str(folder) in message and "999 of its 1000 class folders empty" in message and "noise.tar" in message
    (folder / wnids[1]).rmdir()
    with pytest.raises(MissingResourceError, match="class folder"):  # still partly there
        imagenetc.imagenetc_folder(str(tmp_path), "gaussian_noise", 5)


def test_full_folders_use_imagenet_class_indices_whichever_folders_are_there(tmp_path):
    """A class's label is its ImageNet index (sorted 1,000 wnids), not its rank among the folders present."""
    folder = tmp_path / "ImageNet-C" / "fog" / "1"
    wnids = sorted(imagenetc.imagenet_classes())
    for index in (7, 920):
        save_image(folder / wnids[index] / "a.JPEG", index % 256)
    dataset = imagenetc.imagenetc_folder(str(tmp_path), "fog", 1)
    assert sorted(dataset.targets) == [7, 920]
    save_image(folder / "not_a_wnid" / "a.JPEG", 0)
    with pytest.raises(MissingResourceError, match="not an ImageNet class folder"):
        imagenetc.imagenetc_folder(str(tmp_path), "fog", 1)


def offline(monkeypatch) -> None:
    """No network: robustbench's gdown and torchvision's downloader fail as they do offline."""
    import gdown
    import requests

    def no_network(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Max retries exceeded (name resolution failed)")

    def no_route(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(gdown, "download", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)


@pytest.mark.parametrize("arch, dataset", [("Hendrycks2020AugMix_WRN", "cifar10"), ("Standard", "cifar10"),
                                           ("Standard_R50", "imagenet")])
def test_a_failed_download_says_what_happened(tmp_path, monkeypatch, arch, dataset):
    """Not '(CorruptFileError)': which URL could not be downloaded to which path, why, and what to do."""
    offline(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingResourceError) as err:
        models.load_robustbench_model(arch, str(tmp_path / "ckpt"), dataset)
    message = str(err.value)
    path = (tmp_path / "torch_home" / "hub" / "checkpoints" / models.R50_FILE if dataset == "imagenet"
            else tmp_path / "ckpt" / dataset / "corruptions" / f"{arch}.pt")
    assert one_sentence(message, tmp_path), message
    assert "CorruptFileError" not in message and ("ConnectionError" in message or "URLError" in message)
    assert message.startswith("could not download http") and f"to {path} (" in message
    assert message.endswith("save it at that path")
    assert ("natural.pt.tar" in message) == (arch == "Standard")  # the name a browser gives the file


def test_standard_under_its_google_drive_name_is_pointed_at(tmp_path, monkeypatch):
    """natural.pt.tar beside the expected Standard.pt: rename it (robustbench reads only Standard.pt)."""
    offline(monkeypatch)
    folder = tmp_path / "ckpt" / "cifar10" / "corruptions"
    folder.mkdir(parents=True)
    (folder / "natural.pt.tar").write_bytes(b"")
    with pytest.raises(MissingResourceError) as err:
        models.load_robustbench_model("Standard", str(tmp_path / "ckpt"), "cifar10")
    assert one_sentence(str(err.value), tmp_path) and "rename it to Standard.pt" in str(err.value)


def test_the_current_standard_file_loads_weights_only(tmp_path, monkeypatch):
    """robustbench's CIFAR-10 Standard as Google Drive serves it (natural.pt.tar: a legacy-format torch file
    holding a DataParallel state dict), saved as Standard.pt, loads weights-only into WRN-28-10."""
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    offline(monkeypatch)  # it must never be downloaded again
    reference = WideResNet(depth=28, widen_factor=10)
    path = tmp_path / "ckpt" / "cifar10" / "corruptions" / "Standard.pt"
    path.parent.mkdir(parents=True)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    torch.load(path, weights_only=True)  # tensors and dicts only
    model = models.load_robustbench_model("Standard", str(tmp_path / "ckpt"), "cifar10")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_web_page_saved_as_the_checkpoint_is_named_as_such(tmp_path):
    """Google Drive's confirmation page saved as Standard.pt (robustbench issues 158, 177): said, with the URL."""
    from tent.errors import CorruptFileError

    path = tmp_path / "ckpt" / "cifar10" / "corruptions" / "Standard.pt"
    path.parent.mkdir(parents=True)
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    with pytest.raises(CorruptFileError) as err:
        models.load_robustbench_model("Standard", str(tmp_path / "ckpt"), "cifar10")
    message = str(err.value)
    assert one_sentence(message, tmp_path) and "web page" in message and "drive.google.com" in message
