"""The example programs' modules under cmd/, importable from tests.

``cmd`` is not a package (it would shadow the standard library's ``cmd``), and
the examples import their helpers as siblings; this loads a helper under that
same name, once, without changing ``sys.path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CMD = Path(__file__).resolve().parents[1] / "cmd"


def load(name: str) -> ModuleType:
    """``cmd/<name>.py`` as the module ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CMD / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


crdt_counter = load("crdt_counter")
