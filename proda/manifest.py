"""What produced an output: the inputs of pseudo-label folders, prototype files and training runs.

Each output records its inputs (content hashes of the checkpoints and files it was made from,
and the options that change it); a rerun compares them with its own and refuses, with the `rm`
command to run, when they differ, so that a folder is never half from one model and half from
another and a finished stage is never reused after its warm-up model changed.

    check_manifest(folder_manifest(out_dir), wanted, out_dir, restart=opt.restart)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
from typing import Any, Dict, Iterable, List, Optional

from dacommon.files import atomic_write
from proda.files import OptionError
from proda.options import LABELS, OPTIONS, PROTOTYPES, TRAINING, feeding
from proda.pseudo_labels import saved_pseudo_labels

MANIFEST = ".manifest.json"  # inside a pseudo-label folder
CHUNK = 1 << 22

# the options recorded with each output, as declared in proda/options.py
LABEL_OPTIONS = feeding(LABELS)
PROTOTYPE_OPTIONS = feeding(PROTOTYPES)
# options a training run may change between its runs: where it logs and how fast it gets there,
# the other entry points' options, and paths recorded through the identity of what they point to
RUN_FREE_OPTIONS = {option.name for option in OPTIONS if TRAINING not in option.feeds}


def file_hash(path: str) -> Optional[str]:
    """sha256 of a file's content (None when it does not exist): copies and touches keep it."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonable(value: Any) -> Any:
    """Option values as JSON keeps them (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def picked(opt: argparse.Namespace, keys: Iterable[str]) -> Dict[str, Any]:
    """The named options."""
    return {k: jsonable(getattr(opt, k)) for k in keys}


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """A manifest file's content; None when absent; a corrupt one is an error naming it."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise OptionError(f"manifest {path} is unreadable ({err}): rm {shlex.quote(path)} and rerun") from None


def write_json(path: str, content: Dict[str, Any]) -> None:
    """Write a manifest atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(content, indent=1, sort_keys=True).encode()))


def differences(saved: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """Keys whose values differ (nested one level: 'options.flip')."""
    keys = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{key}.{k}" for k in differences(a, b)]
        elif a != b:
            keys.append(key)
    return keys


# ----------------------------------------------------------------------------- pseudo labels

def pseudo_label_inputs(opt: argparse.Namespace) -> Dict[str, Any]:
    """What pseudo labels depend on: the checkpoint's content and the label-changing options."""
    return {"checkpoint": file_hash(opt.resume_path), "options": picked(opt, LABEL_OPTIONS)}


def prepare_pseudo_folder(opt: argparse.Namespace, out_dir: str) -> None:
    """Record this run's inputs in out_dir, or refuse when the folder holds labels of others.

    A folder without labels (its dot-files aside: the manifest and temporary files of a run that
    failed before its first label, e.g. on a corrupt --resume_path) takes this run's inputs.
    With --restart a folder of other inputs is emptied first.
    """
    wanted = pseudo_label_inputs(opt)
    path = os.path.join(out_dir, MANIFEST)
    saved = read_json(path)
    has_files = os.path.isdir(out_dir) and any(not n.startswith(".") for n in os.listdir(out_dir))
    if saved == wanted or not has_files:
        if saved != wanted:
            write_json(path, wanted)
        return
    why = ("holds files of an unknown run (no manifest)" if saved is None else
           f"holds pseudo labels of other inputs ({', '.join(differences(saved, wanted))} differ)")
    if not opt.restart:
        raise OptionError(f"{out_dir} {why}: rm -r {shlex.quote(out_dir)} and rerun, or pass --restart")
    shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    write_json(path, wanted)


def pseudo_labels_done(opt: argparse.Namespace, out_dir: str, marker: str) -> bool:
    """True when out_dir is complete and made from these inputs; stale folders are refused."""
    saved = read_json(os.path.join(out_dir, MANIFEST))
    if not os.path.isfile(os.path.join(out_dir, marker)):
        return False
    wanted = pseudo_label_inputs(opt)
    if saved != wanted:
        why = "no manifest" if saved is None else ", ".join(differences(saved, wanted)) + " differ"
        raise OptionError(f"{out_dir} holds pseudo labels of other inputs ({why}): "
                          f"rm -r {shlex.quote(out_dir)} and rerun")
    return True


# ----------------------------------------------------------------------------- prototypes

def prototype_manifest(path: str) -> str:
    """Where the inputs of a prototype file are recorded: beside it."""
    return path + ".json"


def prototype_inputs(opt: argparse.Namespace) -> Dict[str, Any]:
    """What prototypes depend on: the checkpoint's content and the options of calc_prototype."""
    return {"checkpoint": file_hash(opt.resume_path), "options": picked(opt, PROTOTYPE_OPTIONS)}


def prototypes_done(opt: argparse.Namespace, path: str) -> bool:
    """True when `path` exists and was computed from these inputs; other inputs are refused
    (or, with --restart, the old file is removed)."""
    if not os.path.isfile(path):
        return False
    saved, wanted = read_json(prototype_manifest(path)), prototype_inputs(opt)
    if saved == wanted:
        return True
    why = "no record of its inputs" if saved is None else ", ".join(differences(saved, wanted)) + " differ"
    if not opt.restart:
        raise OptionError(f"prototype file {path} was computed from other inputs ({why}): "
                          f"rm {shlex.quote(path)} and rerun, or pass --restart")
    os.remove(path)
    return False


def check_prototypes_source(path: str, checkpoint: str) -> Optional[str]:
    """Why the prototype file at `path` does not belong to `checkpoint` (None: it does, or it has no record)."""
    saved = read_json(prototype_manifest(path))
    if saved is None or saved.get("checkpoint") == file_hash(checkpoint):
        return None
    return (f"prototype file {path} was computed from another checkpoint than --resume_path {checkpoint}: "
            f"rm {shlex.quote(path)} and rerun python -m proda.calc_prototype --resume_path {checkpoint}")


# ----------------------------------------------------------------------------- training runs

def training_inputs(opt: argparse.Namespace, prototype_path: Optional[str]) -> Dict[str, Any]:
    """What a training run depends on: its options and the content of every file it starts from."""
    options = {k: jsonable(v) for k, v in sorted(vars(opt).items()) if k not in RUN_FREE_OPTIONS}
    files = {"resume_path": file_hash(opt.resume_path) if (not opt.no_resume or opt.distillation > 0) else None,
             "simclr_path": file_hash(opt.simclr_path) if opt.student_init == "simclr" else None,
             "prototypes": file_hash(prototype_path) if prototype_path else None}
    pseudo_labels = saved_pseudo_labels(opt)
    if pseudo_labels is not None:
        files["pseudo_labels"] = read_json(os.path.join(pseudo_labels.folder, MANIFEST))
    return {"options": options, "files": files}


def check_training_inputs(saved: Optional[Dict[str, Any]], wanted: Dict[str, Any], logdir: str) -> None:
    """Refuse to continue (or call finished) a run whose inputs changed since its checkpoint."""
    if saved == wanted:
        return
    why = "no record of its inputs" if saved is None else ", ".join(differences(saved, wanted)) + " changed"
    raise OptionError(f"the run in {logdir} was made from other inputs ({why}): to start over, "
                      f"rm -r {shlex.quote(logdir)} or pass --restart")
