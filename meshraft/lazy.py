"""Lazy package exports (PEP 562): a package's ``__init__`` names its public API, and
each name is imported from the module that defines it on first use.

Why: a package ``__init__`` runs whenever any of its modules is imported, so eager
re-exports would make ``import meshraft.mesh`` load the kv client, and
``meshraft.kv.protocol`` load the server and Raft. This module owns only that
mechanism; it must never import anything of meshraft's.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str],
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` for ``package``, whose public names are the
    keys of ``homes`` (name -> the full name of the module that defines it)::

        __getattr__, __dir__ = lazy_exports(__name__, {"Client": "meshraft.kv.client"})
    """

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return getattr_, dir_
