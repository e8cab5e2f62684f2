"""Bounds on what a config may contain, checked before yacs or the run sees a value.

A config is tiny (the shipped ones are under 2 kB, three levels deep), so anything far larger is
refused in one line naming the file or key instead of hanging, exhausting memory or recursing:

- size: a config file of at most MAX_FILE_BYTES;
- shape: YAML nested at most MAX_DEPTH deep and at most MAX_NODES values once aliases are
  expanded (an "alias bomb" of a few lines expands to billions), no alias to a node that holds
  it (a structure that contains itself), checked on the YAML events before anything is built
  (PyYAML builds nested nodes recursively: 3,000 levels end in RecursionError);
- values: a list key holds a flat list of its items' type (`MNISTC.SEEDS [[0]]` is refused), an
  integer fits torch's int64, and the keys that size an allocation have a ceiling (LIMITS).
"""
from __future__ import annotations

from typing import Any, Dict, List

import yaml

from .errors import ConfigError

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 10         # a config needs 3: section, key, list
MAX_NODES = 100_000    # a config needs about 100
INT64 = 2 ** 63 - 1    # torch's index type: larger integers overflow in tensor.split and friends
# keys that size an allocation or a pass, and their ceilings
LIMITS: Dict[str, int] = {
    "MNISTC.WIDTH": 1024,          # MnistCNN holds about 135 * WIDTH^2 weights: 141 M at 1024
    "TEST.BATCH_SIZE": 10 ** 9,    # beyond every test set
    "TEST.WINDOW_LENGTH": 10 ** 9,
    "MNISTC.BATCH_SIZE": 10 ** 9,
    "CORRUPTION.NUM_EX": 10 ** 9,
}
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def read_config_text(path: str) -> str:
    """The text of a config file, refused (ConfigError) when larger than MAX_FILE_BYTES."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_FILE_BYTES:,} bytes; a config is a few kB")
    return data.decode("utf-8")


def check_yaml(text: str, source: str) -> None:
    """ConfigError when the YAML is deeper than MAX_DEPTH, expands to more than MAX_NODES values or
    holds itself; read event by event (no recursion, nothing expanded). Syntax errors are yaml's."""
    sizes: List[int] = [0]       # values counted in each open collection
    anchors: List[Any] = []      # the anchor of each open collection
    closed: Dict[str, int] = {}  # anchor -> expanded size of its node
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPEN):
            if len(sizes) > MAX_DEPTH:
                raise ConfigError(f"{source} is nested more than {MAX_DEPTH} levels deep; a config needs 3")
            sizes.append(1)
            anchors.append(event.anchor)
        elif isinstance(event, _CLOSE):
            size = sizes.pop()
            anchor = anchors.pop()
            if anchor is not None:
                closed[anchor] = size
            sizes[-1] += size
        elif isinstance(event, yaml.ScalarEvent):
            sizes[-1] += 1
            if event.anchor is not None:
                closed[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in anchors:
                raise ConfigError(f"{source} holds a YAML alias *{event.anchor} inside its own anchor; "
                                  "a config cannot contain itself")
            sizes[-1] += closed.get(event.anchor, 1)
        if sum(sizes) > MAX_NODES:
            raise ConfigError(f"{source} holds more than {MAX_NODES:,} values (YAML aliases expanded); "
                              "a config needs about 100")


def _item_ok(item: Any, like: Any) -> bool:
    """A list item: a plain scalar, of the type of the default's items when there are any."""
    if isinstance(item, (list, dict)) or item is None:
        return False
    if like is None:
        return isinstance(item, (str, int, float))
    if type(like) is float:
        return type(item) in (int, float)
    return type(item) is type(like)


def _too_big(value: Any) -> bool:
    """An integer (or a list item) beyond int64."""
    items = value if isinstance(value, list) else [value]
    return any(type(v) is int and abs(v) > INT64 for v in items)


def check_value(key: str, value: Any, default: Any, source: str) -> None:
    """ConfigError naming the key for a list of the wrong shape, an integer beyond int64 or a value above LIMITS."""
    if isinstance(default, list) and isinstance(value, list):
        like = default[0] if default else None
        if not all(_item_ok(v, like) for v in value):
            kind = type(like).__name__ if like is not None else "plain value"
            raise ConfigError(f"config key {key} expects a flat list of {kind}s, got {_short(value)} in {source}")
    if _too_big(value):
        raise ConfigError(f"config key {key} must fit in 64 bits, got {_short(value)} in {source}")
    limit = LIMITS.get(key)
    if limit is not None and type(value) is int and value > limit:
        raise ConfigError(f"config key {key} must be <= {limit:,}, got {value:,} in {source}")


def _short(value: Any, width: int = 60) -> str:
    """repr of a value, cut to `width` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."
