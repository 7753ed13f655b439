"""`memipc demo` and `python -m memipc`, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys


def _memipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memipc", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_exchanges_a_message_and_a_reply_between_two_processes() -> None:
    before = {n for n in os.listdir("/dev/shm") if "memipc-demo" in n}
    result = _memipc("demo", "--message", "ping from the test")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "process 2" in out and "process 1" in out
    assert "read: 'ping from the test'" in out
    assert "read reply: 'hello back from process 2" in out
    pids = {line.split("pid ")[1].split("]")[0] for line in out.splitlines() if "pid " in line}
    assert len(pids) == 2  # two different processes really took part
    after = {n for n in os.listdir("/dev/shm") if "memipc-demo" in n}
    assert after <= before  # the demo cleaned up its region


def test_no_command_prints_usage_and_exits_2() -> None:
    result = _memipc()
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_unknown_command_exits_2() -> None:
    assert _memipc("frobnicate").returncode == 2


def test_help_shows_examples() -> None:
    result = _memipc("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "memipc demo" in result.stdout
