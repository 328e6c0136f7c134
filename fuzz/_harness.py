"""Shared by the atheris harnesses: run one under atheris if it is installed
(``pip install -e '.[fuzz]'``), else a bounded smoke run on random inputs so the
harness can still be checked (``python fuzz/fuzz_X.py --smoke 1000``)."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable


def main(test_one_input: Callable[[bytes], None]) -> None:
    if "--smoke" in sys.argv:
        i = sys.argv.index("--smoke")
        n = int(sys.argv[i + 1]) if len(sys.argv) > i + 1 else 1000
        smoke(test_one_input, n)
        print(f"{n} random inputs: ok")
        return
    import atheris  # the `fuzz` extra

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def smoke(test_one_input: Callable[[bytes], None], n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        test_one_input(rng.randbytes(rng.randrange(0, 300)))


def instrumented():
    """atheris.instrument_imports() when atheris is there, else a no-op context."""
    try:
        import atheris
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return atheris.instrument_imports()
