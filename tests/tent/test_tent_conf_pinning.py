"""tent.conf's reshaping changed no behaviour: every shipped config and a set of overrides resolve to the
config the pre-reshaping code (commit PINNED) resolved, and every bad value is refused with its old line.

Both versions run in a subprocess on the same inputs, the old one from `git archive PINNED tent`;
nothing is stored. Skipped where the repository's history is not at hand (an exported tree).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # two interpreters import torch: about 20 s of CPU

PINNED = "bd38bc6"  # the last commit before tent/conf.py was split by concept

# every case: (config file or None for the defaults, overrides); a file name without a folder is a
# small text written to the work folder (FILES below)
GOOD = [
    (None, []),
    ("cfgs/tent.yaml", ["OPTIM.LR", "1", "CORRUPTION.TYPE", "[fog, snow]", "MODEL.EPISODIC", "True"]),
    ("cfgs/tent.yaml", ["MODEL.CONTINUAL", "True"]),
    ("cfgs/tent.yaml", ["MODEL.CONTINUAL", "True", "SETTING", "reset_each_shift"]),
    ("cfgs/tent.yaml", ["SETTING", "continual", "MODEL.CONTINUAL", "True", "MODEL.COPY_STATE", "False"]),
    ("cfgs/tent.yaml", ["MODEL.CONTINUAL", "False", "SETTING", "gradual", "PROTOCOL.PEER", "mariodoebler"]),
    ("cfgs/tent.yaml", ["SETTING", "offline", "OPTIM.EPOCHS", "3", "OPTIM.METHOD", "SGD", "OPTIM.NESTEROV", "False"]),
    ("cfgs/tent.yaml", ["SETTING", "mixed_domains_correlated", "TEST.DELTA_DIRICHLET", "0.1"]),
    ("cfgs/tent.yaml", ["TEST.BATCH_SIZE", "1", "TEST.WINDOW_LENGTH", "16", "MODEL.RESET_AFTER_NUM_UPDATES", "1000"]),
    ("cfgs/tent.yaml", ["CORRUPTION.TYPE", "[fog, none]", "SETTING", "continual", "CORRUPTION.ORDER_SEED", "4"]),
    ("cfgs/mnist/tent.yaml", ["MNISTC.SEEDS", "[0, 1, 2]", "MNISTC.PARAMS", "imagenet",
                              "MNISTC.SOURCE_WEIGHTS", "train", "MODEL.NORM_LAYERS", "[BatchNorm2d, GroupNorm]"]),
    ("cfgs/imagenet/tent.yaml", ["PROTOCOL.PEER", "mariodoebler", "CORRUPTION.NUM_EX", "50000"]),
    ("empty_section.yaml", []),
    ("nested.yaml", ["BN.NO_STATS", "True", "PERF.AMP", "True", "DEVICE", "cpu"]),
]
FILES = {
    "empty_section.yaml": "MODEL: {}\nOPTIM:\n  LR: 0.5\n",
    "nested.yaml": "MODEL:\n  ADAPTATION: norm\nBN:\n  RESET_STATS: true\n  MOM: 0\nOPTIM:\n  LR: 2\n",
    "not_yaml.yaml": "MODEL: [1, 2\n",
    "a_list.yaml": "- just\n- a list\n",
    "unknown.yaml": "MODEL:\n  ARCHH: MnistCNN\n",
    "section.yaml": "MODEL: 3\n",
    "self.yaml": "MODEL: &m\n  SUB: *m\n",
    "deep.yaml": "MNISTC:\n  SEEDS: " + "[" * 30 + "0" + "]" * 30 + "\n",
    "bad_item.yaml": "CORRUPTION:\n  SEVERITY: [5, x]\n",
    "none.yaml": "OPTIM:\n  LR:\n",
}
BAD_OVERRIDES = [
    ["MODEL.ADAPTATION", "tnet"], ["MODEL.ADAPTATIONS", "[source, bn]"], ["MODEL.ARCH", "Standard",
                                                                       "CORRUPTION.DATASET", "mnist"],
    ["MODEL.COPY_STATE", "False"], ["MODEL.COPY_STATE", "False", "SETTING", "continual", "MODEL.EPISODIC", "True"],
    ["SETTING", "gradual", "MODEL.CONTINUAL", "True"], ["MODEL.CONTINUAL", "True", "SETTING", "offline"],
    ["MODEL.CONTINUAL", "1"], ["MODEL.RESET_AFTER_NUM_UPDATES", "-1"], ["SETTING", "sideways"],
    ["SETTING", "offline", "PROTOCOL.PEER", "mariodoebler"], ["PROTOCOL.PEER", "me"],
    ["MODEL.NORM_LAYERS", "[BatchNorm]"], ["MODEL.ADAPTATION", "norm", "MODEL.NORM_LAYERS", "[GroupNorm]"],
    ["MODEL.NORM_LAYERS", "[]"], ["CORRUPTION.DATASET", "svhn"], ["CORRUPTION.TYPE", "[fgo]"],
    ["CORRUPTION.TYPE", "[]"], ["CORRUPTION.TYPE", "fog"], ["CORRUPTION.TYPE", "[[fog]]"],
    ["CORRUPTION.TYPE", "[none]", "CORRUPTION.DATASET", "imagenet"], ["CORRUPTION.TYPE", "[none]", "SETTING",
                                                                     "mixed_domains"],
    ["CORRUPTION.SEVERITY", "[6]"], ["CORRUPTION.SEVERITY", "[]"], ["CORRUPTION.SEVERITY", "[5.0]"],
    ["CORRUPTION.SEVERITY", "[5, x]"], ["CORRUPTION.NUM_EX", "0"], ["CORRUPTION.NUM_EX", "-2"],
    ["CORRUPTION.DATASET", "imagenet", "CORRUPTION.NUM_EX", "6000"], ["CORRUPTION.NUM_EX", str(-10 ** 30)],
    ["CORRUPTION.NUM_EX", str(10 ** 10)], ["CORRUPTION.ORDER_SEED", "-2"], ["CORRUPTION.ORDER_SEED", str(2 ** 32)],
    ["BN.EPS", "0"], ["BN.EPS", "-1e-5"], ["BN.MOM", "1.0"], ["BN.MOM", "-0.1"], ["OPTIM.STEPS", "0"],
    ["OPTIM.LR", "-1e-3"], ["OPTIM.LR", "1e999"], ["OPTIM.LR", "fast"], ["OPTIM.LR", "None"],
    ["OPTIM.METHOD", "RMSprop"], ["OPTIM.BETA", "1.0"], ["OPTIM.MOMENTUM", "-0.9"], ["OPTIM.DAMPENING", "2.0"],
    ["OPTIM.METHOD", "SGD", "OPTIM.MOMENTUM", "0"], ["OPTIM.METHOD", "SGD", "OPTIM.DAMPENING", "0.5"],
    ["OPTIM.WD", "-0.1"], ["OPTIM.EPOCHS", "0"], ["TEST.BATCH_SIZE", "0"], ["TEST.BATCH_SIZE", "1.5"],
    ["TEST.BATCH_SIZE", str(10 ** 30)], ["TEST.DELTA_DIRICHLET", "-1"], ["TEST.WINDOW_LENGTH", "4"],
    ["TEST.WINDOW_LENGTH", "4", "TEST.BATCH_SIZE", "1", "SETTING", "offline"], ["TEST.WINDOW_LENGTH", "0"],
    ["MNISTC.NUM_TRAIN", "5000"], ["MNISTC.NUM_TRAIN", "0"], ["MNISTC.SEED", "-1"], ["MNISTC.WIDTH", "0"],
    ["MNISTC.WIDTH", "100000"], ["MNISTC.EPOCHS", "0"], ["MNISTC.BATCH_SIZE", "0"], ["MNISTC.LR", "0"],
    ["MNISTC.PARAMS", "svhn"], ["MNISTC.SOURCE_WEIGHTS", "any"], ["MNISTC.SEEDS", "[]"],
    ["MNISTC.SEEDS", "[0, 0]"], ["MNISTC.SEEDS", "[0, 1]"], ["MNISTC.SEEDS", "[-1]"], ["MNISTC.SEEDS", "[[0]]"],
    ["MNISTC.SEEDS", "[true]"], ["RNG_SEED", "-1"], ["RNG_SEED", str(2 ** 32)], ["SAVE_DIR", ""],
    ["DATA_DIR", ""], ["CKPT_DIR", ""], ["DEVICE", "gpu0"], ["DEVICE", "cuda:0"],
    ["MODEL.EPISODIC", "1"], ["MODEL.TRUST_CHECKPOINT", "yes"], ["OPTIM.LRR", "0.1"], ["FOO.BAR", "1"],
    ["OPTIM.LR.X", "1"], ["OPTIM", "3"], ["OPTIM.LR"], ["MODEL.ADAPTATIONS", "None"],
]
BAD = [("cfgs/tent.yaml", opts) for opts in BAD_OVERRIDES] + [(name, []) for name in FILES
                                                              if name not in dict(GOOD)]

# the same calls work on the old and the new module; prints one JSON line of outcomes
PROBE = """
import json, sys
from tent import conf
try:  # where the setting rule lives: tent.conf_checks now, tent.conf before the split
    from tent.conf_checks import effective_setting as setting_of
except ImportError:
    setting_of = conf.effective_setting
cases = json.loads(sys.argv[1])
out = []
for path, opts in cases:
    conf.reset_cfg()
    try:
        if path:
            conf.merge_from_file(path)
        conf.merge_from_list(opts)
        conf.assert_and_infer_cfg()
        out.append({"cfg": json.loads(json.dumps(conf.cfg)), "setting": setting_of(conf.cfg)})
    except conf.ConfigError as e:
        out.append({"error": str(e)})
print(json.dumps(out))
"""


def old_tree(dest: Path) -> Path:
    """The tent package of commit PINNED, unpacked under `dest` (skips the test without git history)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(["git", "archive", "--format=tar", PINNED, "tent"], cwd=REPO, capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"commit {PINNED} is not in this checkout's history")
    archive = dest / "old.tar"
    archive.write_bytes(proc.stdout)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "old", filter="data")
    return dest / "old"


def outcomes(root: Path, cases, work: Path):
    """What `root`'s tent.conf makes of every case, run in a fresh interpreter."""
    resolved = [(None if p is None else str(REPO / p) if "/" in p else str(work / p), opts) for p, opts in cases]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(resolved)], cwd=work, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory):
    """Outcomes of every case under the old and the new code."""
    work = tmp_path_factory.mktemp("pinning")
    for name, text in FILES.items():
        (work / name).write_text(text)
    # the configs both versions know: those of commit PINNED that still ship (later ones use later keys and values)
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", PINNED, "cfgs"], cwd=REPO,
                            capture_output=True, text=True).stdout.split()
    shipped = [(name, []) for name in sorted(listed) if name.endswith(".yaml") and (REPO / name).is_file()]
    cases = shipped + GOOD + BAD
    return cases, outcomes(old_tree(work), cases, work), outcomes(REPO, cases, work)


def test_every_config_resolves_as_before(old_and_new):
    cases, old, new = old_and_new
    good = [i for i, (case, o) in enumerate(zip(cases, old)) if "cfg" in o]
    assert len(good) >= 41 + len(GOOD) - 1  # every shipped config, and the good overrides
    for i in good:
        expected = dict(old[i]["cfg"], SETTING=old[i]["setting"])  # MODEL.CONTINUAL True now reads SETTING continual
        assert new[i] == {"cfg": expected, "setting": old[i]["setting"]}, cases[i]


def test_every_bad_value_is_refused_with_the_same_line(old_and_new):
    cases, old, new = old_and_new
    bad = [i for i, o in enumerate(old) if "error" in o]
    assert len(bad) == len(BAD)
    for i in bad:
        assert same_refusal(new[i]["error"], old[i]["error"]), cases[i]


def same_refusal(new: str, old: str) -> bool:
    """The same line, except that a list of choices may have grown (datasets and models added since PINNED)."""
    choices = re.compile(r"\(('[^']*'(?:, '[^']*')*)\)")  # a tuple of names, as the messages print them
    if choices.sub("", new) != choices.sub("", old):
        return False
    grown = [(set(n.split(", ")), set(o.split(", "))) for n, o in zip(choices.findall(new), choices.findall(old))]
    return all(n >= o for n, o in grown)
