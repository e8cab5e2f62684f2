"""Options: resolved once then frozen, each entry point's --help, every shipped config for every entry point."""
import copy
import glob
import os
import pickle

import pytest
import torch

from proda import calc_prototype, generate_pseudo_label, test as proda_test, train
from proda.runner import INFERENCE_OPTIONS
from proda.options import ENTRY_GROUPS, FrozenOptionsError, Options, get_parser, parse_opt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))
MAINS = {"train": train.main, "test": proda_test.main, "generate_pseudo_label": generate_pseudo_label.main,
         "calc_prototype": calc_prototype.main}


# ----------------------------------------------------------------------------- frozen options

def test_resolved_options_are_frozen_and_replace_makes_a_frozen_copy():
    opt = parse_opt(["--root", "r", "--name", "x", "--bs", "4"])
    assert isinstance(opt, Options) and opt.logdir == os.path.join("r", "logs", "x")
    with pytest.raises(FrozenOptionsError, match=r"cannot set 'bs' .*opt.replace\(bs=...\)"):
        opt.bs = 2
    with pytest.raises(AttributeError, match="cannot delete 'lr'"):
        del opt.lr
    with pytest.raises(FrozenOptionsError):
        setattr(opt, "new_name", 1)
    half = opt.replace(bs=2)
    assert half.bs == 2 and opt.bs == 4 and isinstance(half, Options)
    assert {k: v for k, v in vars(half).items() if k != "bs"} == {k: v for k, v in vars(opt).items() if k != "bs"}
    with pytest.raises(FrozenOptionsError):
        half.bs = 1
    with pytest.raises(TypeError, match="no such options: bogus"):
        opt.replace(bogus=1)
    assert getattr(opt, "absent", 7) == 7 and "bs" in opt


@pytest.mark.parametrize("clone", [lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy, copy.copy])
def test_frozen_options_pickle_and_copy_as_frozen_equals(clone):
    opt = parse_opt(["--rcrop", "32,16"])
    twin = clone(opt)
    assert twin == opt and vars(twin) == vars(opt) and type(twin) is Options
    with pytest.raises(FrozenOptionsError):
        twin.rcrop = [1, 1]


def test_inference_overrides_are_applied_in_the_resolution():
    opt = parse_opt(["--no_resume", "--used_save_pseudo"], overrides=INFERENCE_OPTIONS)
    assert opt.noaug and opt.noshuffle and not opt.no_resume and not opt.used_save_pseudo
    assert parse_opt(["--no_resume"]).no_resume  # training keeps the flag
    with pytest.raises(TypeError, match="no such options: nope"):
        parse_opt([], overrides={"nope": 1})


def test_torchrun_batch_and_device_are_resolved_per_process(monkeypatch, capsys):
    """Under torchrun each process takes --bs / WORLD_SIZE images (and cuda:LOCAL_RANK on a GPU machine)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    opt = parse_opt(["--bs", "4", "--device", "cpu"])
    assert opt.bs == 2 and opt.device == ("cuda:1" if torch.cuda.is_available() else "cpu")
    for flags, message in ((["--bs", "3"], "--bs 3 is the total batch size and must be divisible by the 2 processes"),
                           (["--bs", "4", "--accum_steps", "4"], "must divide each process's batch of 2")):
        with pytest.raises(SystemExit) as exit_info:
            parse_opt(flags)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parse_opt(["--bs", "3"]).bs == 3


# ----------------------------------------------------------------------------- --help per entry point

def help_text(entry, capsys):
    """What `python -m proda.<entry> --help` prints."""
    with pytest.raises(SystemExit) as exit_info:
        MAINS[entry](["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("entry, shown, hidden", [
    ("train", ["--stage", "--proto_consistW", "--accum_steps", "--bs", "--resume_path", "--path_soft"],
     ["--save_pred", "--soft", "--flip", "--tta", "--tta_lr", "--source", "--results_json", "--save_path"]),
    ("test", ["--tta", "--tta_lr", "--save_pred", "--results_json", "--bs", "--bn_clr"],
     ["--proto_consistW", "--stage", "--soft", "--source", "--accum_steps", "--path_LP"]),
    ("generate_pseudo_label", ["--soft", "--flip", "--save_path", "--no_droplast"],
     ["--tta", "--stage", "--proto_rectify", "--source", "--save_pred"]),
    ("calc_prototype", ["--source", "--resume_path", "--n_class"], ["--soft", "--tta", "--stage", "--rce"]),
])
def test_each_entry_point_help_lists_only_its_groups(entry, shown, hidden, capsys):
    text = help_text(entry, capsys)
    flags = {word.strip("[],") for word in text.split() if word.startswith(("--", "[--"))}
    assert set(shown) <= flags, set(shown) - flags
    assert not set(hidden) & flags, set(hidden) & flags


def test_every_entry_point_accepts_every_option_on_the_command_line():
    """A script's EXTRA_ARGS reach every step of a stage: another entry point's flag is accepted."""
    argv = ["--soft", "--tta", "tent", "--proto_consistW", "2", "--source", "--save_pred", "p"]
    for entry in ENTRY_GROUPS:
        opt = parse_opt(argv, parser=get_parser(entry=entry))
        assert opt.soft and opt.tta == "tent" and opt.proto_consistW == 2 and opt.source


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_every_shipped_config_loads_for_every_entry_point(path):
    """A stage's configs are shared between its steps (pseudo labels, prototypes, training, test)."""
    resolved = [parse_opt(["--config", path], entry=entry) for entry in ENTRY_GROUPS]
    assert all(vars(opt) == vars(resolved[0]) for opt in resolved)


# ----------------------------------------------------------------------------- one declaration per option

def test_the_parser_and_the_records_are_derived_from_the_declarations():
    """Every declared option is a flag of its group with its default; the lists derive from the same table."""
    from proda import manifest
    from proda.options import (DECLARED, GROUP_TITLES, LABELS, OPTIONS, PATH_OPTIONS, TRAINING, Option, feeding,
                               get_parser, group, option_problem)
    parser = get_parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert list(actions) == [o.name for o in OPTIONS] and len(DECLARED) == len(OPTIONS)
    titles = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    for option in OPTIONS:
        action = actions[option.name]
        assert action.default == option.default and action.help == option.help
        assert option.group == "" or titles[id(action)] == GROUP_TITLES[option.group]
    assert set(PATH_OPTIONS) == {o.name for o in OPTIONS if o.path}
    assert manifest.LABEL_OPTIONS == feeding(LABELS) and "soft" in manifest.LABEL_OPTIONS
    assert manifest.RUN_FREE_OPTIONS == set(DECLARED) - set(feeding(TRAINING))
    assert group("x", Option("y"))[0].group == "x"
    # a declared range is what option_problem checks
    opt = parse_opt(["--proto_temperature", "0.5"]).replace(proto_temperature=0.0)
    assert option_problem(opt) == "--proto_temperature 0.0 is out of range: must be > 0"


def test_the_training_record_names_the_folder_the_loader_reads(tmp_path):
    """The record of a training run holds the manifest of the pseudo labels saved_pseudo_labels picks."""
    from proda import manifest
    from proda.data.cityscapes_dataset import saved_pseudo_labels
    for name in ("soft", "hard"):
        (tmp_path / name).mkdir()
        (tmp_path / name / manifest.MANIFEST).write_text(f'{{"kind": "{name}"}}')
    base = ["--used_save_pseudo", "--path_soft", str(tmp_path / "soft"), "--path_LP", str(tmp_path / "hard")]
    for flags, kind in (([], "hard"), (["--proto_rectify"], "soft")):
        opt = parse_opt(base + flags)
        assert saved_pseudo_labels(opt).kind == kind
        assert manifest.training_inputs(opt, None)["files"]["pseudo_labels"] == {"kind": kind}
    assert "pseudo_labels" not in manifest.training_inputs(parse_opt(["--proto_rectify"]), None)["files"]
