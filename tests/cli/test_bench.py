"""`memipc bench`: small runs end to end as subprocesses, usage errors, skipped peers, the chart.

The figures themselves are not checked (they depend on the machine and on
what else runs on it); the shape of the report is: memipc's cells and the
peer's, a positive ratio between them for the measures they share, JSON
alone on stdout, progress on stderr.  A peer "that cannot be imported" is
made so by putting a package of its name that fails to import first on the
child's PYTHONPATH, so the command's own import check is what is tested.

Default runtime is a few seconds per run (two small runs, about 10 s in
all); the whole --quick run over every peer is behind --stress.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memipc._bench import catalog, compare
from memipc.cli import _bench

RUN_TIMEOUT_S = 300
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _memipc(
    *args: str, hide: tuple[str, ...] = (), tmp: Path | None = None, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `python -m memipc ARGS`; every module in `hide` fails to import, as if not installed."""
    env = dict(os.environ)
    if hide:
        assert tmp is not None
        for module in hide:
            package = tmp / "hidden" / module
            package.mkdir(parents=True)
            message = f"No module named '{module}' (hidden by the test)"
            (package / "__init__.py").write_text(f"raise ModuleNotFoundError({message!r}, name={module!r})\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp / "hidden"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "memipc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def queue_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path | None]:
    """One small run shared by the tests below: the queue benchmark, memipc against multiprocessing.Pipe."""
    chart = tmp_path_factory.mktemp("bench") / "bench.png" if HAVE_MATPLOTLIB else None
    args = ["bench", "--quick", "--only", "queue", "--vs", "mp_pipe", "--json"]
    if chart is not None:
        args += ["--plot", str(chart)]
    return _memipc(*args), chart


def test_a_quick_queue_run_prints_only_json_with_memipc_and_the_peer_and_positive_ratios(
    queue_run: tuple[subprocess.CompletedProcess[str], Path | None],
) -> None:
    done, _ = queue_run
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)  # stdout is one JSON document and nothing else

    assert document["meta"]["suites"] == ["queue"]
    assert document["meta"]["machine"]["cpus"] >= 1
    assert {"name": "mp_pipe", "status": "measured"}.items() <= document["peers"][0].items()
    cells = document["cells"]
    mine = {cell["measure"] for cell in cells if cell["peer"] == "memipc"}
    theirs = {cell["measure"] for cell in cells if cell["peer"] == "mp_pipe"}
    for measure in ("round trip 64 B, blocking", "round trip 64 B, busy-poll", "stream 64 B", "stream 1 MiB"):
        assert measure in mine and measure in theirs
    assert all(cell["value"] > 0 and cell["n"] > 0 for cell in cells)
    assert all(cell["against"] == "memipc.Queue" for cell in cells if cell["peer"] == "mp_pipe")

    ratios = document["ratios"]
    assert {ratio["measure"] for ratio in ratios} == theirs
    for ratio in ratios:
        assert ratio["peer"] == "mp_pipe" and ratio["memipc_row"] == "memipc.Queue"
        assert ratio["memipc_x"] > 0
        expected = (
            ratio["theirs"] / ratio["memipc"] if ratio["unit"] == "ns" else ratio["memipc"] / ratio["theirs"]
        )
        assert math.isclose(ratio["memipc_x"], expected, rel_tol=1e-3)
    assert document["failures"] == []
    assert document["suites"]["queue"]["peers"][0]["peer"] == "memipc_queue"  # the benchmark's own report

    assert "queue (1/1): round 1/1: multiprocessing_pipe" in done.stderr  # progress, one line per step


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed (pip install 'memipc[plot]')")
def test_plot_writes_a_png_of_the_same_run(
    queue_run: tuple[subprocess.CompletedProcess[str], Path | None],
) -> None:
    done, chart = queue_run
    assert done.returncode == 0, done.stderr
    assert chart is not None
    data = chart.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
    assert f"charts written to {chart}" in done.stderr


def test_a_peer_that_cannot_be_imported_is_listed_as_skipped_with_its_pip_command(tmp_path: Path) -> None:
    done = _memipc(
        "bench", "--quick", "--only", "rpc", "--vs", "mp_pipe,pyzmq,mp_queue", hide=("zmq",), tmp=tmp_path
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert re.search(r"call round trip 64 B +mp_pipe +multiprocessing\.Pipe .* \d", text)  # a table row
    assert "pyzmq: not importable" in text and "pip install pyzmq" in text and "memipc[bench]" in text
    assert "mp_queue (only in queue)" in text  # asked for, but its benchmark was left out
    assert "skipped pyzmq: not importable" in done.stderr
    assert "rpc (1/1): round 1/1: memipc" in done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--vs", "mp_pipe,nope"), "'nope'"),
        (("--only", "queue,disk"), "'disk'"),
        (("--vs", ","), "no peer given"),
        (("--plot", "chart.txt"), "chart.txt"),
    ],
)
def test_bad_arguments_are_usage_errors_that_name_the_valid_choices(
    args: tuple[str, ...], named: str
) -> None:
    done = _memipc("bench", *args, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert named in done.stderr
    if args[0] == "--vs":
        assert ", ".join(catalog.PEER_NAMES) in done.stderr
    if args[0] == "--only":
        assert "queue, sync, pubsub, rpc" in done.stderr


def test_plot_without_matplotlib_fails_at_once_with_its_pip_command(tmp_path: Path) -> None:
    done = _memipc("bench", "--plot", str(tmp_path / "x.png"), hide=("matplotlib",), tmp=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "pip install 'memipc[plot]'" in done.stderr
    assert done.stdout == ""
    assert "queue (1/" not in done.stderr  # nothing was measured
    assert not (tmp_path / "x.png").exists()


def test_help_lists_every_peer_and_loads_no_benchmark() -> None:
    done = _memipc("bench", "--help", timeout=60)
    assert done.returncode == 0
    for peer in catalog.PEERS:
        assert peer.name in done.stdout
    probe = (
        "import sys, memipc.cli; memipc.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if '_bench.' in m))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert listed.stdout.strip() == "['memipc._bench.catalog']"


# --------------------------------------------------------------------------- units


def test_select_skips_a_peer_whose_module_fails_to_import_and_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "faster_fifo", None)  # `import faster_fifo` now raises ImportError
    runnable, statuses = compare.select(
        ("faster_fifo", "mp_pipe", "c", "mp_manager"), ("queue", "sync"), None
    )
    assert runnable == ("mp_pipe",)
    status = {s.name: s for s in statuses}
    assert status["faster_fifo"].status == "skipped"
    assert "pip install faster-fifo" in status["faster_fifo"].reason
    assert (
        status["faster_fifo"].install
        == "pip install faster-fifo (or every peer: pip install 'memipc[bench]')"
    )
    assert status["c"].status == "skipped" and "bench/micro" in status["c"].reason
    assert status["mp_manager"].status == "not in the chosen benchmarks"
    assert status["mp_pipe"].status == "measured"


def _cell(peer: str, row: str, unit: compare.Unit, value: float, against: str = "") -> compare.Cell:
    measure = "round trip 64 B, blocking" if unit == "ns" else "stream 64 B"
    return compare.Cell("queue", measure, row, peer, unit, value, 100, against=against)


def test_memipc_x_is_above_one_when_memipc_is_faster_for_times_and_for_rates() -> None:
    cells = [
        _cell("memipc", "memipc.Queue", "ns", 2_000.0),
        _cell("mp_pipe", "multiprocessing.Pipe", "ns", 50_000.0, against="memipc.Queue"),
        _cell("memipc", "memipc.Queue", "msgs/s", 1e6),
        _cell("pyzmq", "pyzmq PAIR", "msgs/s", 4e6, against="memipc.Queue"),
        _cell("c", "memcpy", "msgs/s", math.nan, against="memipc.Queue"),  # no figure: no ratio
        _cell("c", "C spin", "ns", 100.0, against="not measured"),  # nothing to compare with: no ratio
    ]
    ratios = {ratio.peer: ratio.memipc_x for ratio in compare.ratios(cells)}
    assert ratios == {"mp_pipe": 25.0, "pyzmq": 0.25}


def test_the_text_report_has_a_table_per_benchmark_a_summary_and_the_skipped_peers() -> None:
    cells = [
        _cell("memipc", "memipc.Queue", "ns", 2_000.0),
        _cell("mp_pipe", "multiprocessing.Pipe", "ns", 50_000.0, against="memipc.Queue"),
    ]
    outcome = compare.Outcome(
        meta={
            "command": "memipc bench --only queue",
            "date": "2026-01-01T00:00:00+00:00",
            "machine": {
                "python": "3",
                "kernel": "6",
                "cpus": 2,
                "cpu_model": "x",
                "memipc": "0",
                "memipc_core_sha256": "",
            },
            "suites": ["queue"],
            "loadavg_start": [0.5],
            "loadavg_end": [0.7],
            "seconds": 1.0,
        },
        peers=[
            compare.PeerStatus("mp_pipe", "multiprocessing.Pipe", "measured"),
            compare.PeerStatus(
                "pyzmq", "pyzmq", "skipped", "not importable (x); pip install pyzmq", "pip install pyzmq"
            ),
        ],
        cells=cells,
        ratios=compare.ratios(cells),
    )
    text = "\n".join(_bench.render(outcome))
    assert re.search(
        r"round trip 64 B, blocking +mp_pipe +multiprocessing\.Pipe +2 us +50 us +25x$", text, re.M
    )
    assert "queue round trip 64 B" in text  # the summary's column
    assert "  mp_pipe" in text.split("summary:")[1]
    assert "pyzmq: not importable (x); pip install pyzmq" in text.split("skipped")[1]


@pytest.mark.stress
def test_the_whole_quick_run_measures_memipc_and_every_importable_peer_in_every_benchmark() -> None:
    done = _memipc("bench", "--quick", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    for suite in catalog.SUITES:
        assert any(cell["suite"] == suite and cell["peer"] == "memipc" for cell in document["cells"])
    measured = [peer["name"] for peer in document["peers"] if peer["status"] == "measured"]
    assert "mp_pipe" in measured and "mp_sync" in measured
    for name in measured:
        assert any(ratio["peer"] == name and ratio["memipc_x"] > 0 for ratio in document["ratios"]), name
