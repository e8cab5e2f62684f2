"""Install-trap fixes for the robustbench ecosystem, applied once by `import tent`.

robustbench 1.1.1 imports `autoattack` and `autoattack.state`, but its PyPI dependency
`pyautoattack` installs the same code under the module name `pyautoattack` (which only uses
relative imports internally). `install_autoattack_alias()` adds an import hook that serves
`autoattack` and `autoattack.<sub>` from `pyautoattack` -- but only when no real `autoattack`
package is importable, so a user's own AutoAttack install always wins. The hook is lazy: it
imports nothing until robustbench asks for `autoattack`.

The other trap, robustbench importing `pkg_resources`, is handled by the `setuptools<81` pin.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

ALIAS = "autoattack"
TARGET = "pyautoattack"


class _AliasLoader(importlib.abc.Loader):
    """Loads `autoattack[.sub]` by importing `pyautoattack[.sub]` and registering it under both names."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        """Use the default module creation; exec_module swaps in the real module."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Replace the placeholder with the target module, so both names share one object."""
        # the import system returns whatever sits in sys.modules[name] after exec_module,
        # so classes (e.g. EvaluationState) are identical under both names
        sys.modules[module.__name__] = importlib.import_module(self.target)


class AutoattackAliasFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder mapping `autoattack[.sub]` to `pyautoattack[.sub]` when no real one exists."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        """Spec for the alias, or None to let the normal finders handle the name."""
        if fullname == ALIAS:
            if importlib.machinery.PathFinder.find_spec(ALIAS) is not None:
                return None  # a real autoattack is installed: leave it alone
            if importlib.util.find_spec(TARGET) is None:
                return None  # neither is installed: the normal ImportError is the right message
        elif fullname.startswith(ALIAS + "."):
            parent = sys.modules.get(ALIAS)
            if parent is None or parent.__name__ != TARGET:
                return None  # the real autoattack is loaded: its own submodules apply
        else:
            return None
        real_name = TARGET + fullname[len(ALIAS):]
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real_name))


def install_autoattack_alias() -> None:
    """Put the alias finder first on sys.meta_path (idempotent); it imports nothing until used."""
    if not any(isinstance(f, AutoattackAliasFinder) for f in sys.meta_path):
        # first, so `autoattack.state` is not found a second time by path under the alias name
        sys.meta_path.insert(0, AutoattackAliasFinder())
