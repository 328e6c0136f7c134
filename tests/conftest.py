"""Shared test fixtures: OS-assigned ports, meshraft subprocesses that are always
stopped by PID, and the ``needs_root`` marker.

A ``needs_root`` test is skipped when not root, except under ``CI=true``, where a
test that cannot run is a failure: CI must prove the namespace tests, not skip them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from meshraft.ports import free_ports

# Hypothesis profiles. "ci" (the default, so the README's test command is the same
# run every time): derandomized, no example database, every regression an explicit
# @example. "fuzz" (HYPOTHESIS_PROFILE=fuzz python -m pytest ...): random seeds and
# FUZZ_FACTOR times the examples each test asks for, for a developer to run on demand
# and report. A failure found by fuzzing becomes an @example, so CI keeps it.
FUZZ_FACTOR = 20
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", derandomize=False, deadline=None, print_blob=True, max_examples=2000,
    phases=list(Phase), suppress_health_check=[HealthCheck.too_slow],
)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the fuzz profile, multiply the examples a test pins with @settings
    (a decorator's max_examples wins over any profile, so the profile alone would
    leave those tests at their CI size)."""
    if HYPOTHESIS_PROFILE != "fuzz":
        return
    for item in items:
        test = getattr(item, "obj", None)
        if test is None or not hasattr(test, "hypothesis"):
            continue
        # Hypothesis reads this attribute when the test runs; it is how @settings
        # attaches itself to a @given test.
        pinned = getattr(test, "_hypothesis_internal_use_settings", None)
        if pinned is not None:
            test._hypothesis_internal_use_settings = settings(
                pinned, max_examples=pinned.max_examples * FUZZ_FACTOR,
                derandomize=False, database=None)

IN_CI = os.environ.get("CI", "").lower() == "true"
# MESHRAFT_TEST_PRETEND_NONROOT=1 lets the foundation tests check the marker's
# non-root behaviour from a root CI machine.
IS_ROOT = (hasattr(os, "geteuid") and os.geteuid() == 0
           and os.environ.get("MESHRAFT_TEST_PRETEND_NONROOT") != "1")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the OS just handed out for ``kind``. Closed again before returning,
    so there is a small window in which someone else may take it; tests that can
    bind port 0 themselves should prefer that."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]




@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ports():
    return free_ports


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_root") and not IS_ROOT:
        if IN_CI:
            pytest.fail("needs root, and CI=true: root-only tests must run in CI, not be skipped")
        pytest.skip("needs root (network namespaces, iptables)")


@dataclass
class Proc:
    """One subprocess started by a test, with where its output goes."""

    args: list[str]
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 10.0) -> int | None:
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.returncode

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class ProcessManager:
    """Starts ``meshraft`` (or other) subprocesses for a test and always stops
    exactly those, by PID, and removes the temp dirs it made."""

    root: Path
    procs: list[Proc] = field(default_factory=list)
    _counter: int = 0

    def tmpdir(self, name: str = "d") -> Path:
        self._counter += 1
        p = self.root / f"{name}-{self._counter}"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def start(self, *args: str, env: dict[str, str] | None = None, name: str = "proc") -> Proc:
        """Start ``meshraft ARGS...`` (``python -m meshraft.cli``, so it works
        without the console script on PATH)."""
        return self.start_raw([sys.executable, "-m", "meshraft.cli", *args], env=env, name=name)

    def start_raw(
        self, argv: list[str], env: dict[str, str] | None = None, name: str = "proc"
    ) -> Proc:
        self._counter += 1
        log_path = self.root / f"{name}-{self._counter}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as log:
            # Its own process group (pgid = its pid), so that stop_all can also
            # reap what it started (the members `meshraft cluster` spawns).
            popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                start_new_session=True,
            )
        proc = Proc(list(argv), popen, log_path)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``meshraft ARGS...`` to completion and return its result."""
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "meshraft.cli", *args],
            capture_output=True, text=True, timeout=timeout, env=full_env, input=input,
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                try:
                    proc.signal(signal.SIGCONT)  # a paused process cannot die of SIGTERM
                    proc.terminate(timeout=5)
                except ProcessLookupError:
                    pass
            # Whatever is left in its process group (children it started and did not
            # stop, because it was SIGKILLed) goes too; the group is ours.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop every process and remove every temp dir this manager made."""
        try:
            self.stop_all()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[ProcessManager]:
    root = Path(tempfile.mkdtemp(prefix="meshraft-test-"))
    manager = ProcessManager(root)
    try:
        yield manager
    finally:
        manager.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test with
    ``what`` if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the predicate may race with startup
            last_exc = exc
        time.sleep(interval)
    detail = f": {last_exc!r}" if last_exc else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
