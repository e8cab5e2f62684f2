"""Merging config files and command-line `KEY VALUE` overrides into tent.conf's cfg, through yacs.

yacs checks that every key exists and that every value has its default's type; its errors are
reworded here into one line naming the key and the file. Two things yacs would refuse are allowed
first: an int for a float key (`OPTIM.LR 1`), and unquoted YAML flow lists on the command line
(`CORRUPTION.TYPE [fog, snow]`); one thing it would allow, None for a typed key, is refused. A
deprecated key (conf.DEPRECATED_KEYS) is merged with a one-line warning.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, List, Sequence, Tuple

import yaml
from yacs.config import CfgNode

from . import bounds
from .conf import CFG_DEFAULT, DEPRECATED_KEYS, cfg
from .errors import ConfigError

MISSING = object()  # default_of's answer for a key the config does not have

logger = logging.getLogger(__name__)


def default_of(key: str) -> Any:
    """The default value of a dotted key, or MISSING (yacs then names the unknown key)."""
    node: Any = CFG_DEFAULT
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return MISSING
        node = node[part]
    return node


def prepare_value(key: str, value: Any, source: str) -> Any:
    """Decode a command-line string, widen int to float, refuse None: what yacs does not."""
    default = default_of(key)
    if default is MISSING or isinstance(default, CfgNode):
        return value
    if isinstance(value, str) and not isinstance(default, str):
        try:  # the size and depth of what the string would decode to, before decoding it
            bounds.check_yaml(value, f"the value of {key} in {source}")
        except yaml.YAMLError:
            pass  # not YAML: yacs's literal decoding (or the type check) answers
        value = CfgNode._decode_cfg_value(value)
        if isinstance(value, str) and isinstance(default, list):
            try:  # YAML flow lists need no quotes: [gaussian_noise, fog]
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
    if type(default) is float and type(value) is int:
        value = float(value)  # lossless, and `OPTIM.LR 1` should not be an error
    if value is None:
        raise ConfigError(f"config key {key} expects {type(default).__name__}, got None in {source}")
    bounds.check_value(key, value, default, source)
    return value


def _reworded(error: Exception, key: str, value: Any, source: str) -> ConfigError:
    """yacs's error for one KEY VALUE pair as one line naming the key and the source."""
    default = default_of(key)
    if default is MISSING or "Non-existent" in str(error):
        return ConfigError(f"unknown config key {key} in {source}")
    if isinstance(default, CfgNode):
        return ConfigError(f"config key {key} is a section; give its sub-keys in {source}")
    return ConfigError(f"config key {key} expects {type(default).__name__}, "
                       f"got {value!r} ({type(value).__name__}) in {source}")


def _warn_deprecated(key: str, source: str) -> None:
    """One line saying which key replaces a deprecated one."""
    new = DEPRECATED_KEYS[key]
    logger.warning("config key %s in %s is deprecated: %s %r means %s %s", key, source, key, new.old_value,
                   new.new_key, new.new_value)


def merge_pairs(pairs: Iterable[Tuple[str, Any]], source: str, node: CfgNode = cfg) -> None:
    """Set KEY -> value pairs in `node` through yacs (key and type checks), one line per error."""
    for key, value in pairs:
        value = prepare_value(str(key), value, source)
        try:
            node.merge_from_list([str(key), value])
        except (KeyError, AssertionError, ValueError, TypeError) as e:
            raise _reworded(e, str(key), value, source) from None
        if key in DEPRECATED_KEYS:
            _warn_deprecated(str(key), source)


def _flatten(tree: Any, prefix: str, source: str) -> List[Tuple[str, Any]]:
    """(KEY.SUBKEY, value) pairs of a nested YAML mapping."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys, got {tree!r}")
    pairs: List[Tuple[str, Any]] = []
    for k, v in tree.items():
        if isinstance(v, dict):  # an empty section sets nothing (yacs would replace it with {})
            pairs.extend(_flatten(v, f"{prefix}{k}.", source))
        else:
            pairs.append((f"{prefix}{k}", v))
    return pairs


def merge_from_file(cfg_file: str) -> None:
    """Merge a YAML config file into cfg (read as YAML whatever its extension: never run as code)."""
    try:  # bounded first (tent/bounds.py): size, depth and expanded values
        text = bounds.read_config_text(cfg_file)
        bounds.check_yaml(text, f"config file {cfg_file}")
        tree = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {cfg_file}: {getattr(e, 'strerror', None) or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {cfg_file} is not valid YAML: "
                          f"{str(e).splitlines()[0]}") from None
    merge_pairs(_flatten(tree, "", cfg_file), cfg_file)


def merge_from_list(opts: Sequence[str]) -> None:
    """Merge command-line KEY VALUE overrides into cfg, checking every key and type."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]} has no value")
    merge_pairs(zip(opts[0::2], opts[1::2]), "the command-line overrides")


def reset_cfg() -> None:
    """Reset config to initial state (also unfreezes it)."""
    cfg.defrost()
    cfg.merge_from_other_cfg(CFG_DEFAULT)
