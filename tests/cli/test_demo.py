"""`memipc demo` (seed 000's image job, done two ways) and `python -m memipc`, as real subprocesses.

The demo's output files are decoded here with a parser of our own and
compared with the erase and the grayscale recomputed pixel by pixel from
their definitions in the demo's docstring, not with the demo's own code.
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memipc.cli import _demo

SMALL = (160, 120)
FRAMES = 3
#: The frame whose input and results are written: one warm-up frame, then FRAMES.
LAST_FRAME = FRAMES
NUMBER = r"\d+\.\d+"


def _memipc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memipc", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _demo_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "memipc-demo" in n}


def _read_pnm(path: Path) -> tuple[bytes, int, int, bytes]:
    """(magic, width, height, pixels) of a binary PPM/PGM with 8-bit samples (comments allowed)."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    position = 0
    while len(tokens) < 4:
        while data[position : position + 1].isspace():
            position += 1
        if data[position : position + 1] == b"#":
            position = data.index(b"\n", position) + 1
            continue
        start = position
        while not data[position : position + 1].isspace():
            position += 1
        tokens.append(data[start:position])
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    assert maxval == 255
    pixels = data[position + 1 :]
    assert len(pixels) == width * height * (3 if magic == b"P6" else 1)
    return magic, width, height, pixels


def _erased(rgb: bytes, width: int, height: int) -> bytes:
    """The docstring's result 1: the centred rectangle (W/4, H/4, W/2 x H/2) set to black."""
    out = bytearray(rgb)
    for y in range(height // 4, height // 4 + height // 2):
        for x in range(width // 4, width // 4 + width // 2):
            out[3 * (y * width + x) : 3 * (y * width + x) + 3] = b"\0\0\0"
    return bytes(out)


def _gray(rgb: bytes) -> bytes:
    """The docstring's result 2: (77 R >> 8) + (150 G >> 8) + (29 B >> 8) per pixel."""
    return bytes(
        ((77 * rgb[i]) >> 8) + ((150 * rgb[i + 1]) >> 8) + ((29 * rgb[i + 2]) >> 8)
        for i in range(0, len(rgb), 3)
    )


def _check_images(images: dict[str, tuple[bytes, int, int, bytes]], way: str) -> None:
    magic, width, height, frame = images["input"]
    assert (magic, width, height) == (b"P6", *SMALL)
    assert frame == bytes(_demo.FrameMaker(*SMALL).make(LAST_FRAME))  # the frame that was sent
    erased, gray = images[f"{way}-erased"], images[f"{way}-gray"]
    assert erased[:3] == (b"P6", *SMALL)
    assert erased[3] == _erased(frame, *SMALL)
    assert erased[3] != frame  # something was erased
    assert gray[:3] == (b"P5", *SMALL)
    assert gray[3] == _gray(erased[3])


@pytest.fixture(scope="module")
def pnm_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, set[str]]:
    """One small demo run writing PPM/PGM files: (result, output directory, names left behind)."""
    out = tmp_path_factory.mktemp("demo-pnm")
    before = _demo_names()
    result = _memipc("demo", "--frames", str(FRAMES), "--size", "small", "--format", "pnm", "--out", str(out))
    return result, out, _demo_names() - before


def _pnm_images(out: Path) -> dict[str, tuple[bytes, int, int, bytes]]:
    return {path.stem: _read_pnm(path) for path in out.iterdir() if path.suffix in (".ppm", ".pgm")}


def test_demo_moves_frames_the_seeds_way_and_writes_the_input_and_both_results(
    pnm_run: tuple[subprocess.CompletedProcess[str], Path, set[str]],
) -> None:
    result, out, left_behind = pnm_run
    assert result.returncode == 0, result.stderr
    assert re.search(rf"Region \+ Events \(seed\)\s+{FRAMES}(\s+{NUMBER}){{5}}\s+\d+", result.stdout)
    assert "p50" in result.stdout and "p99" in result.stdout and "MB/s" in result.stdout
    assert f"{FRAMES}/{FRAMES} frames" in result.stderr  # progress, plain lines when not a terminal
    assert str(out) in result.stdout
    _check_images(_pnm_images(out), "region")
    assert not left_behind


def test_demo_moves_the_same_frames_with_client_and_server_and_gets_the_same_results(
    pnm_run: tuple[subprocess.CompletedProcess[str], Path, set[str]],
) -> None:
    result, out, _ = pnm_run
    assert result.returncode == 0, result.stderr
    assert re.search(rf"Client / Server\s+{FRAMES}(\s+{NUMBER}){{5}}\s+\d+", result.stdout)
    assert "byte-identical" in result.stdout
    images = _pnm_images(out)
    _check_images(images, "server")
    assert images["server-erased"] == images["region-erased"]
    assert images["server-gray"] == images["region-gray"]


def test_demo_writes_png_files_when_pypng_is_installed(tmp_path: Path) -> None:
    png = pytest.importorskip("png")
    result = _memipc("demo", "--frames", "1", "--size", "small", "--quiet", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no progress
    images = {}
    for path in tmp_path.iterdir():
        assert path.suffix == ".png"
        with path.open("rb") as file:  # Reader(filename=...) would leave the file open
            width, height, rows, info = png.Reader(file=file).read()
            pixels = b"".join(bytes(row) for row in rows)
        assert info["bitdepth"] == 8
        images[path.stem] = (b"P6" if info["planes"] == 3 else b"P5", width, height, pixels)
    frame = bytes(_demo.FrameMaker(*SMALL).make(1))
    assert images["input"] == (b"P6", *SMALL, frame)
    assert images["region-erased"] == (b"P6", *SMALL, _erased(frame, *SMALL))
    assert images["region-gray"] == (b"P5", *SMALL, _gray(_erased(frame, *SMALL)))


@pytest.mark.parametrize("way", ["region", "server"])
def test_a_worker_that_dies_is_reported_and_nothing_is_left_behind(way: str) -> None:
    before = _demo_names()
    result = _memipc("demo", "--frames", "5", "--size", "small", "--no-files", "--crash-worker", f"{way}:3")
    assert result.returncode == 1
    assert "died (killed by SIGKILL)" in result.stderr
    assert _demo_names() <= before


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone too
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    ("signum", "target"),
    [
        (signal.SIGINT, "demo process"),
        (signal.SIGINT, "process group"),  # Ctrl-C at a terminal
        (signal.SIGHUP, "process group"),  # the terminal closes
        (signal.SIGTERM, "demo process"),  # kill, timeout(1)
    ],
)
def test_stopping_the_demo_stops_the_worker_and_removes_every_name(signum: int, target: str) -> None:
    before = _demo_names()
    with subprocess.Popen(
        [sys.executable, "-m", "memipc", "demo", "--frames", "100000000", "--size", "small", "--no-files"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, which a terminal's Ctrl-C would reach whole
    ) as demo:
        try:
            worker_pid = _wait_until_running(demo)
            time.sleep(0.3)  # well inside the frame loop
            if target == "process group":
                os.killpg(demo.pid, signum)
            else:
                demo.send_signal(signum)
            assert demo.wait(timeout=60) == 130
            assert demo.stderr is not None and "interrupted" in demo.stderr.read()
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    assert _demo_names() <= before
    deadline = time.monotonic() + 10
    while not _gone(worker_pid):
        assert time.monotonic() < deadline, f"worker {worker_pid} outlived the demo"
        time.sleep(0.05)


def _wait_until_running(demo: subprocess.Popen[str]) -> int:
    """Read the demo's progress until its first worker is ready; return the worker's pid."""
    assert demo.stderr is not None
    deadline = time.monotonic() + 60
    line = ""
    while "ready" not in line:
        assert time.monotonic() < deadline, "the demo did not start its worker"
        if select.select([demo.stderr], [], [], 1.0)[0]:
            line = demo.stderr.readline()
            assert line, "the demo ended before its worker was ready"
    return int(re.findall(r"worker pid (\d+)", line)[0])


@pytest.mark.parametrize("size", ["3x3", "banana", "640x", "99999x10"])
def test_a_bad_size_is_a_usage_error(size: str) -> None:
    result = _memipc("demo", "--size", size)
    assert result.returncode == 2
    assert "--size" in result.stderr


def test_sizes_are_presets_or_width_x_height() -> None:
    assert _demo.parse_size("small") == (160, 120)
    assert _demo.parse_size("seed") == (1024, 1024)  # 3 MiB of RGB, seed 000's SHARE_MEMORY_SIZE
    assert _demo.parse_size("640X480") == (640, 480)


def test_grayscale_of_whole_channels_equals_the_per_pixel_formula() -> None:
    rng = random.Random(0)
    rgb = bytes([255] * 30 + [0] * 30) + rng.randbytes(3 * 4000)
    assert _demo.grayscale(rgb, len(rgb) // 3) == _gray(rgb)


def test_the_worker_job_gives_the_same_bytes_with_and_without_a_scratch_buffer() -> None:
    width, height = 40, 20
    frame = memoryview(_demo.FrameMaker(width, height).make(7))
    size1, size2 = _demo.result_sizes(width, height)
    outputs = []
    for scratch in (None, bytearray(len(frame)), bytearray(5)):
        erased, gray = bytearray(size1), bytearray(size2)
        rectangle = _demo.erase_rectangle(width, height)
        _demo.erase_and_encode(frame, width, height, rectangle, memoryview(erased), memoryview(gray), scratch)
        outputs.append((bytes(erased), bytes(gray)))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][0] == b"P6\n40 20\n255\n" + _erased(bytes(frame), width, height)


def test_a_region_request_the_worker_cannot_process_comes_back_as_a_reason_not_a_crash() -> None:
    layout = _demo.RegionLayout.for_frame(*SMALL)
    memory = bytearray(layout.region_size)
    header = _demo.ExchangeHeader.from_buffer(memory)
    header.source.offset, header.source.size = layout.source_offset, layout.source_size
    header.source.width, header.source.height = SMALL
    header.source.image_type = 99  # not IMAGE_RGB24
    header.frame_index = 4
    _demo._answer_in_region(header, memoryview(memory), bytearray())
    assert (header.status, header.success, header.answered_index) == (_demo.STATUS_DONE, 0, 4)
    with pytest.raises(
        _demo.DemoFailed, match="could not process frame 4: cannot process an image of type 99"
    ):
        _demo._check_region_answer(header, memoryview(memory), layout, 4)
    header.source.image_type = _demo.IMAGE_RGB24
    header.source.size = 10**12  # runs past the region
    _demo._answer_in_region(header, memoryview(memory), bytearray())
    assert header.success == 0 and b"does not fit" in header.error
    del header


def test_a_server_request_the_worker_cannot_process_comes_back_as_a_reason_not_a_crash() -> None:
    job = _demo.Job(*SMALL, 1, ("", 0), _demo.FrameMaker(*SMALL), _demo.erase_rectangle(*SMALL))
    reply = _demo._answer(memoryview(b"too short"), bytearray())
    with pytest.raises(
        _demo.DemoFailed, match="could not process frame 0: a request of 9 bytes has no header"
    ):
        _demo._check_reply(memoryview(reply), job, 0)
    request = bytearray(_demo.REQUEST.size + 3 * SMALL[0] * SMALL[1])
    _demo.REQUEST.pack_into(request, 0, _demo.REQUEST_MAGIC, *SMALL, *job.rectangle, 5)
    reply = _demo._answer(memoryview(request), bytearray())
    assert _demo._check_reply(memoryview(reply), job, 5)[1:] == _demo.result_sizes(*SMALL)


def test_exchange_header_matches_its_offset_table() -> None:
    header, info = _demo.ExchangeHeader, _demo.ImageInfo
    assert [(name, getattr(info, name).offset) for name, _ in info._fields_] == [
        ("file_name", 0),
        ("offset", 64),
        ("size", 72),
        ("image_type", 80),
        ("width", 84),
        ("height", 88),
        ("reserved", 92),
    ]
    assert ctypes.sizeof(info) == 96
    offsets = {name: getattr(header, name).offset for name, _ in header._fields_}
    assert offsets == {
        "source": 0,
        "result1": 96,
        "result2": 192,
        "status": 288,
        "success": 292,
        "frame_index": 296,
        "erase_x": 304,
        "erase_y": 308,
        "erase_width": 312,
        "erase_height": 316,
        "worker_pid": 320,
        "stop": 324,
        "answered_index": 328,
        "work_ns": 336,
        "error": 344,
    }
    assert ctypes.sizeof(header) == 600


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
