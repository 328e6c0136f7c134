"""The atheris harnesses in fuzz/ still run (a short smoke run on random inputs,
without atheris), so they do not rot between long fuzzing sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = sorted(p.name for p in FUZZ.glob("fuzz_*.py"))


def test_there_is_a_harness_per_decoder():
    assert {"fuzz_client_request.py", "fuzz_mesh_frame.py", "fuzz_gossip_payload.py",
            "fuzz_raft_message.py", "fuzz_kv_command.py"} <= set(HARNESSES)


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_smoke(name):
    r = subprocess.run([sys.executable, str(FUZZ / name), "--smoke", "300"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "300 random inputs: ok" in r.stdout
