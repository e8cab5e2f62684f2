"""Python config files for ProDA: plain option assignments with `_base_` inheritance.

A config file is an ordinary Python file whose top-level assignments are option values,
named exactly as the command-line flags (``lr = 6e-4``, ``rce = True``). A file may set
``_base_ = "base.py"`` (or a list of files), resolved relative to itself; the bases are
loaded first, in order, and the file's own assignments override them. Names starting with
an underscore, modules, functions and classes are not options.

    cfg = Config.fromfile("configs/gta2city_stage1.py")
    cfg.lr, cfg["rce"]
"""
from __future__ import annotations

import os
import runpy
import types
from typing import Any, Dict, List, Optional


class ConfigError(ValueError):
    """A config file that cannot be loaded: missing, cyclic, or not valid Python."""


class Config(dict):
    """Option values loaded from a Python config file; keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def fromfile(path: str) -> "Config":
        """Load `path` and its `_base_` chain into one flat Config (later files win)."""
        return Config(_load(os.path.abspath(path), stack=[]))


def _shown(path: str) -> str:
    """A path as messages show it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _load(path: str, stack: List[str]) -> Dict[str, Any]:
    """Options of one file, with its bases merged underneath."""
    if path in stack:
        chain = " -> ".join(_shown(p) for p in stack + [path])
        raise ConfigError(f"config inheritance cycle: {chain}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {_shown(path)}")
    try:
        namespace = runpy.run_path(path)
    except SyntaxError as err:
        raise ConfigError(f"config file {_shown(path)} is not valid Python: {err}") from None
    except (Exception, SystemExit, KeyboardInterrupt) as err:  # noqa: BLE001 - NameError, ImportError, ...: one line
        raise ConfigError(f"config file {_shown(path)} failed to run: {type(err).__name__}: {err}") from None

    merged: Dict[str, Any] = {}
    for base in _as_list(namespace.get("_base_"), path):
        base_path = os.path.join(os.path.dirname(path), base)
        merged.update(_load(os.path.abspath(base_path), stack + [path]))
    merged.update(_options(namespace, path))
    return merged


def _as_list(value: Optional[Any], path: str) -> List[str]:
    """`_base_` may be absent, one path, or a list (or tuple) of paths; anything else is an error."""
    if value is None:
        return []
    bases = [value] if isinstance(value, str) else value
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"_base_ in {_shown(path)} must be a file name or a list of file names, got {value!r}")
    return list(bases)


DATA = (bool, int, float, str, type(None))  # what an option value may be (and lists / tuples of it)


def _is_data(value: Any) -> bool:
    """A plain option value: a number, string, boolean, None, or a list / tuple of them."""
    if isinstance(value, (list, tuple)):
        return all(_is_data(v) for v in value)
    return isinstance(value, DATA)


def _options(namespace: Dict[str, Any], path: str) -> Dict[str, Any]:
    """The option assignments of an executed config file; a public name bound to anything but
    plain data (a lambda, a class, an open file) is refused, not silently dropped. Imported
    modules are not options (a config may `import math`); helpers must start with '_'."""
    options = {}
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if not _is_data(value):
            raise ConfigError(f"'{key}' in {_shown(path)} is a {type(value).__name__}, not an option value "
                              "(options are numbers, strings, booleans or lists of them; name helpers '_...')")
        options[key] = value
    return options
