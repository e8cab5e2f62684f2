"""The ProDA options as a user and the output records see them, pinned to a stored snapshot.

`snapshot()` records every entry point's parser (each action's flags, destination, default,
type, choices, help and group), the error line of each bad value (command line and config
file), the options every shipped config resolves to, and the records (manifests) that pseudo
labels, prototypes and training runs compare on a rerun. tests/proda/data/proda_options_pinned.json
holds the snapshot of the code before the options were declared in one table; the options
must look the same from outside, so that command lines, config files and the folders of
earlier runs keep working.

Regenerate (only when a change of the options is intended):
    python tests/proda/test_proda_option_table.py > tests/proda/data/proda_options_pinned.json
"""
import contextlib
import glob
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PINNED = os.path.join(HERE, "data", "proda_options_pinned.json")
ENTRIES = [None, "train", "test", "generate_pseudo_label", "calc_prototype"]

# one bad value per check (each alone, so that exactly that check answers), and some good ones at the edges
BAD_FLAGS = [
    ["--bs", "0"], ["--bs", "1"], ["--epochs", "-1"], ["--epochs", "0"], ["--train_iters", "0"],
    ["--max_iters", "-1"], ["--lr", "-0.5"], ["--lr", "0"], ["--num_workers", "-1"], ["--print_interval", "0"],
    ["--val_interval", "0"], ["--resize", "0"], ["--proto_temperature", "0"], ["--proto_temperature", "1e-12"],
    ["--adv", "-1"], ["--rce_alpha", "-1"], ["--rce_beta", "-1"], ["--regular_w", "-1"], ["--proto_consistW", "-1"],
    ["--distillation", "-1"], ["--S_pseudo", "-1"], ["--S_pseudo_src", "-1"], ["--seed", "-1"], ["--seed", "0"],
    ["--seed", str(2 ** 32)], ["--seed", str(2 ** 32 - 1)], ["--accum_steps", "0"], ["--tta_lr", "-1"],
    ["--tta_steps", "0"], ["--hflip", "-0.1"], ["--hflip", "1.5"], ["--hflip", "1"], ["--proto_momentum", "2"],
    ["--train_thred", "-1"], ["--threshold", "-1.5"], ["--threshold", "1.5"], ["--threshold", "-1"],
    ["--rcrop", "0,5"], ["--src_img_size", "5,0"], ["--tgt_img_size=-1,4"], ["--lr", "nan"], ["--lr", "inf"],
    ["--hflip", "nan"], ["--threshold=-inf"], ["--bn_clr"], ["--bn_clr", "--student_init", "simclr"],
    ["--bn_clr", "--student_init", "random"], ["--accum_steps", "3"], ["--accum_steps", "4"],
    ["--device", "bogus"], ["--device", "meta"], ["--bs", "x"], ["--lr", "abc"], ["--rcrop", "3"],
    ["--backbone_layers", "0,1,1,1"], ["--backbone_layers", "1,1"], ["--stage", "foo"], ["--n_class", "7"],
    ["--bn", "gn"], ["--amp", "fp8"], ["--tta", "x"], ["--nope"], ["--soft", "1"],
]
# one config file per entry: `key = value` lines
BAD_CONFIGS = [
    "rce = 1", "bs = 2.0", "bs = True", "lr = 'x'", "lr = 1", "stage = 'foo'", "rcrop = [1]", "rcrop = None",
    "src_img_size = None", "tgt_img_size = (64, 32)", "name = 3", "nope = 1", "backbone_layers = '1,1'",
    "backbone_layers = [2, 2, 2, 2]", "n_class = 16", "n_class = 17", "config = 'x.py'", "help = True",
    "soft = None", "hflip = 2", "seed = -3", "f = lambda: 1", "_base_ = 'missing.py'", "lr = (",
]
# option sets whose records (manifests) are pinned; run in a folder holding the files named here
RECORD_FLAGS = [
    [], ["--resume_path", "ckpt.pkl"], ["--resume_path", "ckpt.pkl", "--soft", "--flip", "--n_class", "16"],
    ["--resume_path", "ckpt.pkl", "--source", "--bs", "2", "--seed", "3", "--tgt_img_size", "64,32"],
    ["--resume_path", "ckpt.pkl", "--used_save_pseudo", "--proto_rectify", "--path_soft", "soft", "--ema"],
    ["--resume_path", "ckpt.pkl", "--used_save_pseudo", "--path_LP", "hard", "--threshold", "0.9"],
    ["--resume_path", "ckpt.pkl", "--no_resume"], ["--no_resume", "--distillation", "1", "--resume_path", "ckpt.pkl"],
    ["--student_init", "simclr", "--simclr_path", "ckpt.pkl", "--bn_clr"], ["--root", "r", "--name", "n", "--max_iters", "5"],
    ["--used_save_pseudo", "--path_soft", "soft", "--path_LP", "missing"],
]


def parser_record(parser):
    """Everything --help, argparse and a config file see of a parser: its text and every action in order."""
    titles = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    actions = [{"flags": list(a.option_strings), "dest": a.dest, "default": a.default,
                "type": getattr(a.type, "__name__", None), "choices": None if a.choices is None else list(a.choices),
                "help": a.help, "action": type(a).__name__, "nargs": a.nargs, "const": a.const,
                "metavar": a.metavar, "required": a.required, "group": titles.get(id(a))}
               for a in parser._actions]
    return {"description": parser.description, "epilog": parser.epilog, "usage": parser.usage,
            "formatter": parser.formatter_class.__name__, "groups": [g.title for g in parser._action_groups],
            "actions": actions}


def entry_record(parser):
    """An entry point's parser: the full parser's actions, with the other entry points' options hidden from --help."""
    full, record = parser_record(get_full_parser()), parser_record(parser)
    hidden = [a["dest"] for a in record["actions"] if a["help"] == "==SUPPRESS=="]
    shown_equal = [dict(a, help=None) if a["dest"] in hidden else a for a in record["actions"]] == [
        dict(a, help=None) if a["dest"] in hidden else a for a in full["actions"]]
    return {"description": record["description"], "epilog": record["epilog"], "hidden": hidden,
            "otherwise_the_full_parser": shown_equal and dict(record, actions=0, description=0, epilog=0) ==
            dict(full, actions=0, description=0, epilog=0)}


def get_full_parser():
    """The parser of every option, all shown (the shell helpers, tests)."""
    from proda.options import get_parser
    return get_parser("ProDA")


def error_line(parse, *args, **kwargs):
    """What parse(...) prints when it stops ('ok' when it returns)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parse(*args, **kwargs)
        except SystemExit as stop:
            return f"exit {stop.code}: {err.getvalue().strip()}"
    return "ok"


def records(flags):
    """The manifests of pseudo labels, prototypes and a training run made with `flags`."""
    from proda import manifest
    from proda.options import parse_opt
    opt = parse_opt(flags)
    return {"pseudo_labels": manifest.pseudo_label_inputs(opt), "prototypes": manifest.prototype_inputs(opt),
            "training": manifest.training_inputs(opt, "protos"),
            "training_files_without_prototypes": manifest.training_inputs(opt, None)["files"]}


def snapshot(repo, work):
    """The options as seen from outside; `work`: an empty folder to run in (relative paths keep it portable)."""
    from proda import manifest
    from proda.options import ENTRY_GROUPS, GROUP_TITLES, PATH_OPTIONS, STAGES, get_parser, parse_opt
    from proda.files import OptionError
    from proda import options
    saved_argv, saved_cwd, saved_cpus = sys.argv, os.getcwd(), options.available_cpus
    sys.argv = ["proda"]
    options.available_cpus = lambda: 64  # the default --num_workers follows the CPUs: pin the reference's 6
    try:
        os.chdir(repo)
        shipped = sorted(os.path.relpath(p) for p in glob.glob(os.path.join("configs", "**", "*.py"), recursive=True))
        defaults = vars(parse_opt([]))
        resolved = {p: {k: v for k, v in vars(parse_opt(["--config", p])).items() if v != defaults[k]} for p in shipped}
        os.chdir(work)
        for name, content in (("ckpt.pkl", b"weights"), ("protos", b"prototypes"),
                              ("soft/.manifest.json", b'{"checkpoint": "a"}'), ("hard/.manifest.json", b'{"x": 1}')):
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            with open(name, "wb") as f:
                f.write(content)
        configs = {}
        for text in BAD_CONFIGS:
            with open("bad.py", "w") as f:
                f.write(text + "\n")
            lines = {error_line(parse_opt, ["--config", "bad.py"], entry=e) for e in ENTRIES}
            configs[text] = lines.pop() if len(lines) == 1 else sorted(lines)
        stale = []
        for flags in RECORD_FLAGS:
            try:
                stale.append(records(flags))
            except OptionError as err:
                stale.append(f"OptionError: {err}")
        return {
            "parser": parser_record(get_parser("ProDA")),
            "entry_parsers": {e: entry_record(get_parser("proda." + e, entry=e)) for e in ENTRIES[1:]},
            "stages": list(STAGES), "entry_groups": {k: list(v) for k, v in ENTRY_GROUPS.items()},
            "group_titles": GROUP_TITLES, "path_options": sorted(PATH_OPTIONS),
            "label_options": sorted(manifest.LABEL_OPTIONS), "prototype_options": sorted(manifest.PROTOTYPE_OPTIONS),
            "run_free_options": sorted(manifest.RUN_FREE_OPTIONS),
            "flag_errors": {" ".join(f): error_line(parse_opt, f) for f in BAD_FLAGS},
            "config_errors": configs,
            "defaults": defaults,
            "rooted": vars(parse_opt(["--root", "r", "--name", "x", "--logdir", "", "--save_path", "/abs"])),
            "shipped_configs": resolved,
            "records": stale,
        }
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        options.available_cpus = saved_cpus


def test_options_look_as_pinned(tmp_path, monkeypatch):
    """Flags, help, error lines, config values and output records are those of the pinned snapshot."""
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    with open(PINNED) as f:
        pinned = json.load(f)
    now = json.loads(json.dumps(snapshot(os.path.dirname(os.path.dirname(HERE)), str(tmp_path))))
    assert now.keys() == pinned.keys()
    for key in pinned:
        if isinstance(pinned[key], dict):
            assert now[key].keys() == pinned[key].keys(), key
            for sub in pinned[key]:
                assert now[key][sub] == pinned[key][sub], (key, sub)
        else:
            assert now[key] == pinned[key], key


if __name__ == "__main__":
    import tempfile
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        os.environ.pop(key, None)
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(snapshot(os.getcwd(), folder), indent=1, sort_keys=True))
