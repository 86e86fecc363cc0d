"""Real servers on loopback for the tests: a free port, waiting for health, a server process's lifetime."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(check, timeout: float, what: str) -> None:
    """Poll `check()` every second until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def server_process(cmd: list[str], health_url: str, log: Path, env: dict | None = None) -> Iterator[None]:
    """Run `cmd` in its own session (logging to `log`) until `health_url` answers; stop it (SIGTERM to
    its process group) on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: healthy(health_url) or proc.poll() is not None, 180, f"{cmd[0]} at {health_url}")
            assert proc.poll() is None, f"{' '.join(cmd)} exited with {proc.returncode}: {log.read_text()[-2000:]}"
            yield
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
