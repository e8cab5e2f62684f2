"""Every folder a ProDA run reads data from or writes to by default is kept out of git."""
import os
import shutil
import subprocess

import pytest

from proda.options import PATH_OPTIONS, parse_opt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ["configs/gta2city_stage1.py", "configs/syn2city_stage2.py", "configs/demo/gta2city_stage1.py"]


def top_folders():
    """The first component of every default path (options' defaults and the shipped stage configs')."""
    folders = set()
    for argv in [[]] + [["--config", os.path.join(REPO, c)] for c in CONFIGS]:
        opt = parse_opt(argv)
        for key in (*PATH_OPTIONS, "logdir"):
            path = os.path.normpath(getattr(opt, key))
            if path and path != "." and not os.path.isabs(path):
                folders.add(path.split(os.sep)[0])
    return folders


def test_the_default_data_and_output_folders_are_ignored():
    ignored = {line.strip().strip("/") for line in open(os.path.join(REPO, ".gitignore")) if line.startswith("/")}
    assert {"Dataset", "pretrained", "Pseudo", "logs", "demo"} <= top_folders()
    assert top_folders() <= ignored


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ignores_a_dataset_file():
    proc = subprocess.run(["git", "check-ignore", "-q", "Dataset/GTA5/images/00001.png"], cwd=REPO)
    assert proc.returncode in (0, 128)  # 128: not a git checkout (an sdist); 1 would mean: not ignored
