"""Every starting checkpoint has a source: a missing file's one line names the path and a URL."""
import os
import re

import pytest

from proda import pipeline
from proda.files import CheckpointError
from proda.models.deeplabv2 import imagenet_weights_path, load_pretrained, restore
from proda.weight_sources import PRODA_README, SOURCES, missing_hint, released, source_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URL = re.compile(r"https://\S+")


def test_every_source_names_a_file_and_an_https_url():
    assert set(SOURCES) == {"imagenet", "simclr"} | {f"{pair}_{stage}" for pair in ("gta2city", "syn2city")
                                                      for stage in ("warmup", "stage1", "stage2", "stage3")}
    for source in SOURCES.values():
        assert source.url.startswith("https://") and source.file in source.download_line()
        assert source_of(source.path) is source  # the table finds its own entries


def test_the_docs_list_every_source():
    docs = open(os.path.join(REPO, "docs", "proda.md")).read()
    for key, source in SOURCES.items():
        assert source.url in docs and source.file in docs, key


@pytest.mark.parametrize("key", [k for k in SOURCES if k.endswith(("warmup", "stage1", "stage2", "stage3"))])
def test_a_missing_released_model_names_its_path_and_url(key):
    source = SOURCES[key]
    for folder in (source.folder, os.path.join("logs", os.path.basename(source.folder))):
        path = os.path.join(folder, source.file)
        with pytest.raises(CheckpointError) as err:
            restore(None, path, 19)
        line = str(err.value)
        assert "\n" not in line and path in line and source.url in line


def test_a_missing_checkpoint_outside_the_table_points_at_the_released_models():
    with pytest.raises(CheckpointError) as err:
        restore(None, "elsewhere/model.pkl", 19)
    assert "elsewhere/model.pkl" in str(err.value) and PRODA_README in str(err.value)
    assert source_of("logs/my_run/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl") is None
    assert PRODA_README in missing_hint("logs/my_run/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl")


def test_missing_simclr_and_imagenet_files_name_their_path_and_url(tmp_path):
    simclr = str(tmp_path / "pretrained" / "simclr" / "r101_1x_sk0.pth")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(None, "simclr", simclr, "")
    assert simclr in str(err.value) and SOURCES["simclr"].url in str(err.value) and "--simclr_path" in str(err.value)
    imagenet = str(tmp_path / "resnet101-5d3b4d8f.pth")
    with pytest.raises(CheckpointError) as err:
        imagenet_weights_path(imagenet)
    assert imagenet in str(err.value) and SOURCES["imagenet"].url in str(err.value)


@pytest.mark.parametrize("src,prefix", [("gta5", "gta2city"), ("synthia", "syn2city")])
def test_the_stage_chain_names_the_released_models(src, prefix, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expected = {"stage1": released(prefix, "warmup"), "stage2": released(prefix, "stage1"),
                "stage3": released(prefix, "stage2")}
    for stage, source in expected.items():
        with pytest.raises(SystemExit) as stop:
            pipeline.main([stage], environ={"SRC": src})
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 1 and len(err.splitlines()) == 1
        assert err.startswith(f"error: {tmp_path}/") and source.url in err and source.file in err
        assert URL.findall(err) == [source.url]
