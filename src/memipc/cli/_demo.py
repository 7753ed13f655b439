"""``memipc demo``: seed 000's image job, end to end, done two ways and timed.

The parent process makes test frames (an RGB gradient with a moving square,
deterministic, generated here) and sends each to a worker process started
with the ``spawn`` method.  The worker "erases" a region of the frame and
returns two results:

* result 1: the frame with the centred rectangle (x = W/4, y = H/4, W/2 by
  H/2 pixels, integer division) set to black, as a binary PPM image (P6);
* result 2: that erased frame in grayscale, as a binary PGM image (P5), each
  pixel ``(77*R >> 8) + (150*G >> 8) + (29*B >> 8)`` (Rec. 601 weights in
  256ths, each term rounded down).

The job runs twice and the timings are printed side by side:

1. The seed's way.  One Region starts with a ctypes header struct
   (:class:`ExchangeHeader`: for the source and each result a file name,
   offset, size, image type, width and height; a status word; a success
   flag), and two auto-reset Events say "data ready" and "done".  The parent
   copies a frame in behind the header, fills in the header and sets "data
   ready".  The worker erases in place: it reads the frame where it lies,
   writes both results into the region after it, records their offsets and
   sizes, sets the success flag and sets "done".  The parent checks the
   results where they lie.
2. With memipc.Client / memipc.Server.  The worker serves requests (a small
   header and the frame); the parent calls, and the reply carries both
   results (a small header with their sizes, then the two images).

Latency is per frame, from handing the frame over until both results are in
the parent's hands (checked in place in the region; returned as bytes by
``Client.call``).  Of its mean, "worker" is the time the worker spent erasing
and encoding and "handoff" the rest: copies, signals, wake-ups.  MB/s is frame
megabytes (10^6 bytes) per second of latency.  One warm-up frame per way is
not counted.

The input and both results of the last frame are written as image files:
PNG when the optional ``pypng`` is installed (``pip install 'memipc[demo]'``),
PPM/PGM otherwise.  Every name the demo creates starts with one unique prefix.
All of them are removed when the demo ends, including after Ctrl-C or a
worker's death.  A dead worker is reported at once, through a watchdog thread
that interrupts the wait, and the demo exits with status 1.  Ctrl-C, SIGTERM
or a hang-up stops the demo (status 130); the workers ignore Ctrl-C and the
hang-up and are stopped by the parent, and a worker whose parent dies stops
by itself.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import ctypes
import importlib
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import IO, Any

import memipc

from .. import _names
from .._platform import current as platform

# ---- frames and what the worker does to them --------------------------------

SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "small": (160, 120),
    "vga": (640, 480),
    "seed": (1024, 1024),  # 3 MiB of RGB: SHARE_MEMORY_SIZE in seed 000
    "hd": (1920, 1080),
}
DEFAULT_SIZE = "seed"
DEFAULT_FRAMES = 100
MIN_SIDE, MAX_SIDE = 16, 8192

#: Grayscale lookup tables: each channel's share of Y, in 256ths, rounded down.
#: The largest sum is 76 + 149 + 28 = 253, so the three shares of one pixel
#: never carry into the next byte: :func:`grayscale` adds whole channels at
#: once as big integers.
LUMA_RED = bytes((77 * v) >> 8 for v in range(256))
LUMA_GREEN = bytes((150 * v) >> 8 for v in range(256))
LUMA_BLUE = bytes((29 * v) >> 8 for v in range(256))

SQUARE_COLOURS = (b"\xff\xff\xff", b"\xff\xd2\x00", b"\x00\xc8\xff")


def erase_rectangle(width: int, height: int) -> tuple[int, int, int, int]:
    """The rectangle the worker blacks out: (x, y, w, h), centred, half of each side."""
    return width // 4, height // 4, width // 2, height // 2


def pnm_header(gray: bool, width: int, height: int) -> bytes:
    """The header of a binary PGM (P5) or PPM (P6) image with 8-bit samples."""
    return b"P%d\n%d %d\n255\n" % (5 if gray else 6, width, height)


def result_sizes(width: int, height: int) -> tuple[int, int]:
    """Sizes in bytes of result 1 (PPM) and result 2 (PGM) of a ``width`` x ``height`` frame."""
    pixels = width * height
    return len(pnm_header(False, width, height)) + 3 * pixels, len(pnm_header(True, width, height)) + pixels


class FrameMaker:
    """Deterministic test frames: a gradient (red across, green down, blue against red)
    with a square that bounces around and changes colour from frame to frame."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.frame_bytes = 3 * width * height
        row = bytearray(3 * width)
        row[0::3] = bytes(255 * x // (width - 1) for x in range(width))
        row[2::3] = bytes(255 - 255 * x // (width - 1) for x in range(width))
        background = bytearray(self.frame_bytes)
        stride = 3 * width
        for y in range(height):
            row[1::3] = bytes((255 * y // (height - 1),)) * width
            background[y * stride : (y + 1) * stride] = row
        self._background = bytes(background)
        self.square = max(2, min(width, height) // 5)
        self._step = max(1, min(width, height) // 24)

    def square_at(self, index: int) -> tuple[int, int]:
        """Top-left corner of the square in frame ``index``."""

        def bounce(t: int, span: int) -> int:
            t %= 2 * span
            return t if t <= span else 2 * span - t

        return (
            bounce(index * self._step, self.width - self.square),
            bounce(index * self._step * 2 // 3, self.height - self.square),
        )

    def make_into(self, index: int, out: memoryview | bytearray) -> None:
        """Write frame ``index`` (``frame_bytes`` of RGB) into ``out``."""
        out[: self.frame_bytes] = self._background
        x, y = self.square_at(index)
        paint = SQUARE_COLOURS[index % len(SQUARE_COLOURS)] * self.square
        stride = 3 * self.width
        for row in range(y, y + self.square):
            start = row * stride + 3 * x
            out[start : start + len(paint)] = paint

    def make(self, index: int) -> bytearray:
        frame = bytearray(self.frame_bytes)
        self.make_into(index, frame)
        return frame


def grayscale(rgb: bytearray | bytes, pixels: int) -> bytes:
    """Y of every pixel of packed RGB (see LUMA_*), without a per-pixel Python loop.

    Extended slices pick one channel (fast on bytes and bytearray, slow on
    memoryview), ``translate`` weighs it, and the three weighted channels are
    added as integers of ``pixels`` bytes each: no byte overflows (see
    LUMA_RED), so the sum holds every pixel's Y in its own byte.
    """
    total = (
        int.from_bytes(rgb[0::3].translate(LUMA_RED), "little")
        + int.from_bytes(rgb[1::3].translate(LUMA_GREEN), "little")
        + int.from_bytes(rgb[2::3].translate(LUMA_BLUE), "little")
    )
    return total.to_bytes(pixels, "little")


def erase_and_encode(
    source: memoryview,
    width: int,
    height: int,
    rectangle: tuple[int, int, int, int],
    erased_out: memoryview,
    gray_out: memoryview,
    scratch: bytearray | None = None,
) -> None:
    """The worker's job: result 1 (PPM) into ``erased_out``, result 2 (PGM) into ``gray_out``.

    ``source`` is ``width * height`` packed RGB pixels; the outputs must be
    exactly :func:`result_sizes` long.  Pure Python, no numpy (numpy's table
    look-ups were measured no faster): one private copy of the frame, into
    ``scratch`` when it is given and of the right size (a fresh 3 MiB buffer
    costs more in page faults than the copy itself), one slice assignment per
    erased row, and :func:`grayscale`.
    """
    if scratch is not None and len(scratch) == len(source):
        scratch[:] = source
        pixels = scratch
    else:
        pixels = bytearray(source)
    x, y, w, h = rectangle
    stride, blank = 3 * width, bytes(3 * w)
    for row in range(y, y + h):
        start = row * stride + 3 * x
        pixels[start : start + len(blank)] = blank
    header = pnm_header(False, width, height)
    erased_out[: len(header)] = header
    erased_out[len(header) :] = pixels
    header = pnm_header(True, width, height)
    gray_out[: len(header)] = header
    gray_out[len(header) :] = grayscale(pixels, width * height)


class DemoFailed(Exception):
    """Something went wrong that the demo reports in one line and exits 1 for."""


class WorkerDied(DemoFailed):
    """The worker process exited while the parent still needed it."""


# ---- way 1: the seed's header struct and two events ------------------------

IMAGE_RGB24, IMAGE_PPM, IMAGE_PGM = 1, 2, 3
STATUS_IDLE, STATUS_ATTACHED, STATUS_REQUEST, STATUS_DONE = 0, 1, 2, 3
READY_SUFFIX, DONE_SUFFIX = ".ready", ".done"
ERROR_BYTES = 256


class ImageInfo(ctypes.Structure):
    """Where one image lies in the region (the seed's FileInfo).

    offset size field       notes
    ------ ---- ----------- --------------------------------------------------
         0   64 file_name   what the image would be saved as; informational
        64    8 offset      from the start of the region's user area
        72    8 size        bytes
        80    4 image_type  IMAGE_RGB24 (raw pixels), IMAGE_PPM or IMAGE_PGM
        84    4 width
        88    4 height
        92    4 reserved    zero
    """

    _fields_ = (
        ("file_name", ctypes.c_char * 64),
        ("offset", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("image_type", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    )


class ExchangeHeader(ctypes.Structure):
    """The struct at offset 0 of the demo region (the seed's EarseImageData).

    The parent writes the request fields, then sets "data ready"; the worker
    writes the answer fields, then sets "done".  Event.set() is a release
    and Event.wait() an acquire (event.c), so everything written before a
    set() is visible after the matching wait() returns: no field needs an
    atomic of its own.  Each side reads the other's fields once, checks
    them, and only then uses them.

    offset size field         written by / notes
    ------ ---- ------------- -----------------------------------------------
         0   96 source        parent: the frame (IMAGE_RGB24) after the header
        96   96 result1       worker: the erased frame (IMAGE_PPM)
       192   96 result2       worker: its grayscale (IMAGE_PGM)
       288    4 status        parent: REQUEST; worker: ATTACHED, DONE
       292    4 success       worker: 1 if both results are there, else 0
       296    8 frame_index   parent; the worker copies it to answered_index
       304   16 erase_x/_y/_width/_height   parent: the rectangle to erase
       320    4 worker_pid    worker
       324    4 stop          parent: 1 = exit at the next "data ready".  Its own
                              word, so the worker's DONE cannot overwrite it
       328    8 answered_index  worker
       336    8 work_ns       worker: time spent erasing and encoding
       344  256 error         worker: why success is 0 (UTF-8, NUL-padded)
    """

    _fields_ = (
        ("source", ImageInfo),
        ("result1", ImageInfo),
        ("result2", ImageInfo),
        ("status", ctypes.c_uint32),
        ("success", ctypes.c_uint32),
        ("frame_index", ctypes.c_uint64),
        ("erase_x", ctypes.c_uint32),
        ("erase_y", ctypes.c_uint32),
        ("erase_width", ctypes.c_uint32),
        ("erase_height", ctypes.c_uint32),
        ("worker_pid", ctypes.c_uint32),
        ("stop", ctypes.c_uint32),
        ("answered_index", ctypes.c_uint64),
        ("work_ns", ctypes.c_uint64),
        ("error", ctypes.c_char * ERROR_BYTES),
    )


def _align(value: int, to: int = 64) -> int:
    return (value + to - 1) // to * to


#: The frame starts here, after the header (the seed puts it at sizeof(header)).
DATA_OFFSET = _align(ctypes.sizeof(ExchangeHeader))


@dataclass(frozen=True)
class RegionLayout:
    """Where the frame and the two results go in the demo region."""

    width: int
    height: int
    source_offset: int
    source_size: int
    result1_offset: int
    result1_size: int
    result2_offset: int
    result2_size: int
    region_size: int

    @classmethod
    def for_frame(cls, width: int, height: int) -> RegionLayout:
        source_size = 3 * width * height
        result1_size, result2_size = result_sizes(width, height)
        result1_offset = _align(DATA_OFFSET + source_size)
        result2_offset = _align(result1_offset + result1_size)
        return cls(
            width,
            height,
            DATA_OFFSET,
            source_size,
            result1_offset,
            result1_size,
            result2_offset,
            result2_size,
            result2_offset + result2_size,
        )


class _BadRequest(Exception):
    """The worker refuses a request whose header does not describe a frame it can process."""


def _region_worker(base: str, width: int, height: int, crash_at: int) -> None:
    """Worker, seed's way: wait for "data ready", erase in place, set "done"; until told to stop."""
    region = memipc.Region.open(base)
    ready = memipc.Event(base + READY_SUFFIX, create=False)
    done = memipc.Event(base + DONE_SUFFIX, create=False)
    view = region.view(0, ctypes.sizeof(ExchangeHeader))
    header = view.struct(ExchangeHeader)
    data = region.buf
    try:
        header.worker_pid = os.getpid()
        header.status = STATUS_ATTACHED
        done.set()
        served = 0
        scratch = bytearray(3 * width * height)
        while True:
            ready.wait()  # no timeout: if the parent dies, _stop_when_gone interrupts this
            if header.stop:
                return
            served += 1
            if served == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            _answer_in_region(header, data, scratch)
            done.set()  # release: the results and the header above are visible to the parent
    finally:
        del header, data
        view.close()
        for handle in (ready, done, region):
            handle.close()


def _answer_in_region(header: ExchangeHeader, data: memoryview, scratch: bytearray) -> None:
    """Answer the request the header holds: both results and success, or the reason for failure."""
    started = time.perf_counter_ns()
    try:
        _erase_in_region(header, data, scratch)
    except _BadRequest as error:
        header.success = 0
        header.error = str(error).encode()[: ERROR_BYTES - 1]
    else:
        header.success = 1
        header.error = b""
    header.work_ns = time.perf_counter_ns() - started
    header.answered_index = header.frame_index
    header.status = STATUS_DONE


def _erase_in_region(header: ExchangeHeader, data: memoryview, scratch: bytearray) -> None:
    """Process the frame the header describes; write both results after it and describe them."""
    source = header.source
    offset, size, kind = source.offset, source.size, source.image_type
    width, height = source.width, source.height
    rectangle = (header.erase_x, header.erase_y, header.erase_width, header.erase_height)
    if kind != IMAGE_RGB24 or not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise _BadRequest(f"cannot process an image of type {kind}, {width}x{height}")
    if size != 3 * width * height or offset < DATA_OFFSET or offset + size > len(data):
        raise _BadRequest(f"frame of {size} bytes at offset {offset} does not fit {width}x{height} RGB")
    x, y, w, h = rectangle
    if x + w > width or y + h > height:
        raise _BadRequest(f"rectangle {rectangle} is outside the {width}x{height} frame")
    size1, size2 = result_sizes(width, height)
    offset1 = _align(offset + size)
    offset2 = _align(offset1 + size1)
    if offset2 + size2 > len(data):
        raise _BadRequest(f"the region ({len(data)} bytes) has no room for the results")
    with (
        data[offset : offset + size] as frame,
        data[offset1 : offset1 + size1] as erased,
        data[offset2 : offset2 + size2] as gray,
    ):
        erase_and_encode(frame, width, height, rectangle, erased, gray, scratch)
    stem = bytes(source.file_name).split(b".")[0]
    for info, where, length, image_type, suffix in (
        (header.result1, offset1, size1, IMAGE_PPM, b"-erased.ppm"),
        (header.result2, offset2, size2, IMAGE_PGM, b"-gray.pgm"),
    ):
        info.file_name = stem[:48] + suffix
        info.offset, info.size, info.image_type = where, length, image_type
        info.width, info.height = width, height


def _check_region_answer(header: ExchangeHeader, data: memoryview, layout: RegionLayout, step: int) -> int:
    """Check the worker's answer to ``step`` where it lies; return the worker's time in ns."""
    status, success, answered = header.status, header.success, header.answered_index
    if status != STATUS_DONE or answered != step:
        raise DemoFailed(f"the worker answered frame {answered} with status {status}; expected frame {step}")
    if not success:
        reason = header.error.decode(errors="replace")
        raise DemoFailed(f"the worker could not process frame {step}: {reason}")
    results_start = layout.source_offset + layout.source_size
    for info, gray, expected_size in (
        (header.result1, False, layout.result1_size),
        (header.result2, True, layout.result2_size),
    ):
        offset, size, image_type = info.offset, info.size, info.image_type
        width, height = info.width, info.height
        if (
            image_type != (IMAGE_PGM if gray else IMAGE_PPM)
            or (width, height) != (layout.width, layout.height)
            or size != expected_size
            or offset < results_start
            or offset + size > len(data)
        ):
            raise DemoFailed(
                f"the worker described a result of frame {step} the demo cannot use: type {image_type}, "
                f"{width}x{height}, {size} bytes at offset {offset}"
            )
        expected_header = pnm_header(gray, layout.width, layout.height)
        if data[offset : offset + len(expected_header)] != expected_header:
            raise DemoFailed(f"result at offset {offset} of frame {step} does not start with a PNM header")
    work_ns: int = header.work_ns
    return work_ns


def _run_region_way(job: Job, progress: Progress, supervisor: Supervisor) -> MethodRun:
    """The seed's way: a Region with a ctypes header at offset 0, "data ready" and "done" Events."""
    layout = RegionLayout.for_frame(job.width, job.height)
    outcome = MethodRun(REGION_LABEL, "region", layout.source_size)
    base = _unique_name(outcome.slug)
    region = memipc.Region.create(base, layout.region_size)
    process: BaseProcess | None = None
    ready = done = None
    view = header = data = None
    try:
        ready = memipc.Event(base + READY_SUFFIX, manual_reset=False, create=True)
        done = memipc.Event(base + DONE_SUFFIX, manual_reset=False, create=True)
        view = region.view(0, ctypes.sizeof(ExchangeHeader))
        header = view.struct(ExchangeHeader)
        data = region.buf
        source = header.source
        source.offset, source.size, source.image_type = layout.source_offset, layout.source_size, IMAGE_RGB24
        source.width, source.height = job.width, job.height
        header.erase_x, header.erase_y, header.erase_width, header.erase_height = job.rectangle
        del source
        process = _start_worker(_region_worker, base, job.width, job.height, job.crash_at(outcome.slug))
        with supervisor.watching(process, REGION_LABEL):
            if not done.wait(STARTUP_TIMEOUT) or header.status != STATUS_ATTACHED:
                raise DemoFailed(
                    f"the worker did not attach to region {base!r} within {STARTUP_TIMEOUT:.0f} s"
                )
            outcome.worker_pid = header.worker_pid
            progress.start(REGION_LABEL, job.frames, outcome.worker_pid)
            frame = bytearray(layout.source_size)
            frame_end = layout.source_offset + layout.source_size
            for step in range(WARMUP_FRAMES + job.frames):
                job.maker.make_into(step, frame)
                started = time.perf_counter_ns()
                data[layout.source_offset : frame_end] = frame  # memcpy, as the seed does
                header.source.file_name = b"frame-%06d.rgb" % step
                header.frame_index = step
                header.success = 0
                header.status = STATUS_REQUEST
                ready.set()  # release: the frame and the header above are visible to the worker
                if not done.wait(FRAME_TIMEOUT):
                    raise DemoFailed(f"the worker did not answer frame {step} within {FRAME_TIMEOUT:.0f} s")
                work_ns = _check_region_answer(header, data, layout, step)
                elapsed_ns = time.perf_counter_ns() - started
                if step >= WARMUP_FRAMES:
                    outcome.record(elapsed_ns, work_ns)
                    progress.frame(REGION_LABEL, len(outcome.latencies_ns), job.frames, elapsed_ns)
            first, second = header.result1, header.result2
            outcome.last_input = bytes(frame)
            outcome.last_results = (
                bytes(data[first.offset : first.offset + first.size]),
                bytes(data[second.offset : second.offset + second.size]),
            )
            del first, second
        progress.finish(REGION_LABEL, outcome)
        return outcome
    finally:
        with _shielded():
            if process is not None:

                def ask_to_stop() -> None:
                    if header is not None and ready is not None:
                        header.stop = 1
                        ready.set()

                _stop_worker(process, ask_to_stop)
            header = data = None  # the exports must go before the view and region can close
            for handle in (view, ready, done, region):
                if handle is not None:
                    with contextlib.suppress(BufferError, memipc.Error, OSError):
                        handle.close()
            _sweep(base)


# ---- way 2: Client / Server ---------------------------------------------------

#: Request: magic, width, height, erase x, y, w, h, frame index; then the RGB pixels.
REQUEST = struct.Struct("<4s6IQ")
REQUEST_MAGIC = b"MDrq"
#: Reply: magic, status (0 ok, else an error message of size1 bytes follows),
#: frame index, worker ns, size1, size2; then result 1 and result 2.
REPLY = struct.Struct("<4sIQQQQ")
REPLY_MAGIC = b"MDrp"
SERVER_SUFFIX, UP_SUFFIX = ".server", ".up"


def _server_sizes(width: int, height: int) -> tuple[int, int]:
    """(capacity, max_message) for the demo's Server: room for the larger of request and reply, twice."""
    largest = max(REQUEST.size + 3 * width * height, REPLY.size + sum(result_sizes(width, height)))
    return 2 * largest, largest


def _answer(request: memoryview, scratch: bytearray) -> bytearray:
    """The Server handler's work: the reply to one request."""
    started = time.perf_counter_ns()
    try:
        with memoryview(request) as whole:
            if whole.nbytes < REQUEST.size:
                raise _BadRequest(f"a request of {whole.nbytes} bytes has no header")
            magic, width, height, x, y, w, h, step = REQUEST.unpack_from(whole)
            if magic != REQUEST_MAGIC or not (
                MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE
            ):
                raise _BadRequest(f"not a demo request for a frame it can process ({width}x{height})")
            if whole.nbytes != REQUEST.size + 3 * width * height or x + w > width or y + h > height:
                raise _BadRequest(f"request of {whole.nbytes} bytes does not hold a {width}x{height} frame")
            size1, size2 = result_sizes(width, height)
            reply = bytearray(REPLY.size + size1 + size2)
            with (
                whole.cast("B")[REQUEST.size :] as frame,
                memoryview(reply) as out,
                out[REPLY.size : REPLY.size + size1] as erased,
                out[REPLY.size + size1 :] as gray,
            ):
                erase_and_encode(frame, width, height, (x, y, w, h), erased, gray, scratch)
    except _BadRequest as error:
        message = str(error).encode()
        return bytearray(REPLY.pack(REPLY_MAGIC, 1, 0, 0, len(message), 0) + message)
    REPLY.pack_into(reply, 0, REPLY_MAGIC, 0, step, time.perf_counter_ns() - started, size1, size2)
    return reply


def _server_worker(base: str, width: int, height: int, crash_at: int) -> None:
    """Worker, Client/Server way: serve requests until the parent stops us (KeyboardInterrupt)."""
    up = memipc.Event(base + UP_SUFFIX, create=False)
    capacity, max_message = _server_sizes(width, height)
    served = 0
    scratch = bytearray(3 * width * height)

    def handle(request: memoryview) -> bytearray:
        nonlocal served
        served += 1
        if served == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return _answer(request, scratch)

    try:
        with memipc.Server(base + SERVER_SUFFIX, capacity=capacity, max_message=max_message) as server:
            up.set()
            server.serve(handle)
    finally:
        up.close()


def _check_reply(reply: memoryview, job: Job, step: int) -> tuple[int, int, int]:
    """Check a reply; return (worker ns, size of result 1, size of result 2)."""
    if reply.nbytes < REPLY.size:
        raise DemoFailed(
            f"the server's reply to frame {step} is {reply.nbytes} bytes, shorter than its header"
        )
    magic, status, answered, work_ns, size1, size2 = REPLY.unpack_from(reply)
    if magic != REPLY_MAGIC:
        raise DemoFailed(f"the server's reply to frame {step} is not a demo reply")
    if status != 0:
        reason = bytes(reply[REPLY.size : REPLY.size + size1]).decode(errors="replace")
        raise DemoFailed(f"the server could not process frame {step}: {reason}")
    if answered != step or (size1, size2) != result_sizes(job.width, job.height):
        raise DemoFailed(f"the server answered frame {answered} with results of {size1} and {size2} bytes")
    if reply.nbytes != REPLY.size + size1 + size2:
        raise DemoFailed(
            f"the server's reply to frame {step} is {reply.nbytes} bytes; its header says otherwise"
        )
    for start, gray in ((REPLY.size, False), (REPLY.size + size1, True)):
        expected = pnm_header(gray, job.width, job.height)
        if reply[start : start + len(expected)] != expected:
            raise DemoFailed(f"a result of frame {step} from the server does not start with a PNM header")
    return work_ns, size1, size2


def _run_server_way(job: Job, progress: Progress, supervisor: Supervisor) -> MethodRun:
    """The same job with memipc.Client / memipc.Server: one call per frame."""
    outcome = MethodRun(SERVER_LABEL, "server", 3 * job.width * job.height)
    base = _unique_name(outcome.slug)
    up = memipc.Event(base + UP_SUFFIX, create=True)
    process: BaseProcess | None = None
    try:
        process = _start_worker(_server_worker, base, job.width, job.height, job.crash_at(outcome.slug))
        with supervisor.watching(process, SERVER_LABEL):
            if not up.wait(STARTUP_TIMEOUT):
                raise DemoFailed(f"the server did not start within {STARTUP_TIMEOUT:.0f} s")
            outcome.worker_pid = process.pid
            progress.start(SERVER_LABEL, job.frames, process.pid)
            request = bytearray(REQUEST.size + outcome.frame_bytes)
            with memipc.Client(base + SERVER_SUFFIX) as client, memoryview(request) as whole:
                pixels = whole[REQUEST.size :]
                for step in range(WARMUP_FRAMES + job.frames):
                    job.maker.make_into(step, pixels)
                    REQUEST.pack_into(request, 0, REQUEST_MAGIC, job.width, job.height, *job.rectangle, step)
                    started = time.perf_counter_ns()
                    reply = memoryview(client.call(request, timeout=FRAME_TIMEOUT))
                    work_ns, size1, size2 = _check_reply(reply, job, step)
                    elapsed_ns = time.perf_counter_ns() - started
                    if step >= WARMUP_FRAMES:
                        outcome.record(elapsed_ns, work_ns)
                        progress.frame(SERVER_LABEL, len(outcome.latencies_ns), job.frames, elapsed_ns)
                    if step == WARMUP_FRAMES + job.frames - 1:
                        outcome.last_input = bytes(pixels)
                        outcome.last_results = (
                            bytes(reply[REPLY.size : REPLY.size + size1]),
                            bytes(reply[REPLY.size + size1 : REPLY.size + size1 + size2]),
                        )
                    reply.release()
                pixels.release()
        progress.finish(SERVER_LABEL, outcome)
        return outcome
    finally:
        with _shielded():
            if process is not None:
                _stop_worker(process, process.terminate)  # SIGTERM: KeyboardInterrupt in serve()
            with contextlib.suppress(memipc.Error, OSError):
                up.close()
            _sweep(base)


# ---- processes: start, watch, stop, clean up ---------------------------------

STARTUP_TIMEOUT = 60.0
FRAME_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
WARMUP_FRAMES = 1
SPAWN = multiprocessing.get_context("spawn")


def _unique_name(slug: str) -> str:
    return f"memipc-demo-{os.getpid()}-{uuid.uuid4().hex[:8]}-{slug}"


def _sweep(base: str) -> list[str]:
    """Remove every OS object named ``base`` or ``base.*`` that is still there; return their names.

    Normally there is none: a region goes with its last handle.  This is for
    the cases where that rule cannot act, such as a worker killed while the
    parent's handles could not close.
    """
    removed = []
    for os_name in platform.list_segments():
        parsed = _names.from_os_name(os_name)
        if parsed is not None and (parsed.name == base or parsed.name.startswith(base + ".")):
            with contextlib.suppress(FileNotFoundError):
                platform.unlink_segment(os_name)
                removed.append(parsed.name)
    return removed


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: What stops the demo: Ctrl-C, ``kill``, and the terminal closing.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _handling(signums: tuple[int, ...], handler: Any) -> Iterator[None]:
    """Install ``handler`` for ``signums`` during a block (main thread only; elsewhere a no-op)."""
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _shielded() -> contextlib.AbstractContextManager[None]:
    """Ignore the stop signals for a block: cleanup is bounded by timeouts and must not be cut short."""
    return _handling(STOP_SIGNALS, signal.SIG_IGN)


def _stop_signals_interrupt() -> contextlib.AbstractContextManager[None]:
    """Make SIGTERM and SIGHUP stop the demo as Ctrl-C does, cleaning up on the way out."""
    return _handling((signal.SIGTERM, signal.SIGHUP), _raise_keyboard_interrupt)


def _start_worker(body: Callable[..., None], *args: Any) -> BaseProcess:
    """Start ``body(*args)`` in a fresh interpreter (spawn), immune to the stop signals from birth."""
    process = SPAWN.Process(
        target=_worker_main, args=(body, *args), name=f"memipc-demo{body.__name__}", daemon=True
    )
    with _shielded():  # ignored signals stay ignored across exec, so start-up cannot be cut short
        process.start()
    return process


def _worker_main(body: Callable[..., None], *args: Any) -> None:
    """A worker's entry point: SIGTERM (from the parent, or from our own watchdog) means stop.

    Ctrl-C, and the hang-up when the terminal closes, reach every process of
    the terminal's group; the worker ignores both and lets the parent stop it
    in order.  SIGTERM raises KeyboardInterrupt, which ends ``Server.serve``
    and any wait.  If the parent dies, a watchdog thread sends us SIGTERM, so
    no worker outlives it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_stop_when_gone, args=(parent.sentinel,), name="memipc-demo-parent-watch", daemon=True
        ).start()
    try:
        body(*args)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_when_gone(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os.kill(os.getpid(), signal.SIGTERM)


def _stop_worker(process: BaseProcess, ask_to_stop: Callable[[], None]) -> None:
    """Ask, then insist: every step waits at most STOP_TIMEOUT, so stopping never hangs."""
    if process.is_alive():
        with contextlib.suppress(memipc.Error, OSError):
            ask_to_stop()
        process.join(STOP_TIMEOUT)
    if process.is_alive():
        process.terminate()
        process.join(STOP_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join(STOP_TIMEOUT)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class Supervisor:
    """Turns a worker's unexpected death into :class:`WorkerDied` in the main thread, at once.

    While a worker is being watched, a thread sleeps on its sentinel (readable
    when the process ends).  If the worker ends first, the thread interrupts
    the main thread with SIGUSR1 (``_thread.interrupt_main``), whose handler
    raises WorkerDied wherever the main thread is waiting: memipc's blocking
    calls check for signals at least every 50 ms.  Outside ``watching``, or
    once the parent itself stops the worker, a late signal is ignored.  Off
    the main thread (no signal handlers there) the waits' timeouts remain.
    """

    def __init__(self) -> None:
        self._watched: tuple[BaseProcess, str] | None = None
        self._dead: tuple[BaseProcess, str] | None = None
        self._previous: Any = None
        self._enabled = False

    def __enter__(self) -> Supervisor:
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
            self._enabled = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            signal.signal(signal.SIGUSR1, self._previous if self._previous is not None else signal.SIG_DFL)
            self._enabled = False

    @contextlib.contextmanager
    def watching(self, process: BaseProcess, label: str) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        wake_read, wake_write = os.pipe()
        watched = (process, label)
        self._watched = watched
        thread = threading.Thread(
            target=self._watch, args=(watched, wake_read), name="memipc-demo-worker-watch", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            self._watched = None  # from here on the handler ignores a late signal
            os.write(wake_write, b"\0")
            thread.join()
            os.close(wake_read)
            os.close(wake_write)

    def _watch(self, watched: tuple[BaseProcess, str], wake_read: int) -> None:
        process = watched[0]
        ended = multiprocessing.connection.wait([process.sentinel, wake_read])
        if process.sentinel in ended and self._watched is watched:
            self._dead = watched
            _thread.interrupt_main(signal.SIGUSR1)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        dead = self._dead
        if dead is None or dead is not self._watched:
            return
        self._dead = None
        process, label = dead
        process.join(1.0)
        raise WorkerDied(
            f"{label}: the worker process (pid {process.pid}) died ({_describe_exit(process.exitcode)}) "
            "while the demo was waiting for it; everything the demo created has been removed"
        )


# ---- results, progress, files ------------------------------------------------

REGION_LABEL = "Region + Events (seed)"
SERVER_LABEL = "Client / Server"


@dataclass(frozen=True)
class Job:
    """What to send: frame size, how many frames, what to erase."""

    width: int
    height: int
    frames: int
    crash: tuple[str, int]  # (way, request number) for the tests; ("", 0) = never
    maker: FrameMaker
    rectangle: tuple[int, int, int, int]

    def crash_at(self, way: str) -> int:
        return self.crash[1] if self.crash[0] == way else 0


@dataclass
class MethodRun:
    """One way's timings and the last frame it moved."""

    label: str
    slug: str
    frame_bytes: int
    worker_pid: int | None = None
    latencies_ns: list[int] = field(default_factory=list)
    work_ns: list[int] = field(default_factory=list)
    last_input: bytes | None = None
    last_results: tuple[bytes, bytes] | None = None

    def record(self, latency_ns: int, work_ns: int) -> None:
        self.latencies_ns.append(latency_ns)
        self.work_ns.append(work_ns)

    def summary(self) -> tuple[float, float, float, float, float]:
        """(mean, p50, p99, worker mean) in ms, and MB/s."""
        ordered = sorted(self.latencies_ns)
        count = len(ordered)

        def rank(percent: float) -> float:  # nearest-rank percentile
            return ordered[max(0, math.ceil(percent / 100 * count) - 1)] / 1e6

        total_ns = sum(ordered)
        return (
            total_ns / count / 1e6,
            rank(50),
            rank(99),
            sum(self.work_ns) / count / 1e6,
            count * self.frame_bytes / 1e6 / (total_ns / 1e9),
        )


class Progress:
    """Progress on stderr: one line redrawn in place on a terminal, a few plain lines otherwise."""

    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._tty = stream.isatty()
        self._drawn_at = 0.0
        self._line_open = False

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def clear(self) -> None:
        if self._line_open:
            self._write("\r\x1b[K")
            self._line_open = False

    def note(self, text: str) -> None:
        if not self._quiet:
            self.clear()
            self._write(text + "\n")

    def start(self, label: str, frames: int, worker_pid: int | None) -> None:
        self.note(
            f"{label}: worker pid {worker_pid} ready; sending {WARMUP_FRAMES} warm-up + {frames} frames"
        )

    def frame(self, label: str, done: int, total: int, latency_ns: int) -> None:
        if self._quiet:
            return
        if self._tty:
            now = time.monotonic()
            if done == total or now - self._drawn_at >= 0.05:
                self._drawn_at = now
                self._write(f"\r{label}: frame {done}/{total}, {latency_ns / 1e6:.1f} ms\x1b[K")
                self._line_open = True
        elif done == total or done % max(1, total // 4) == 0:
            self._write(f"{label}: {done}/{total} frames\n")

    def finish(self, label: str, outcome: MethodRun) -> None:
        seconds = sum(outcome.latencies_ns) / 1e9
        self.note(f"{label}: done, {len(outcome.latencies_ns)} frames in {seconds:.2f} s")


def _table(runs: list[MethodRun]) -> list[str]:
    columns = f"{'frames':>7}{'mean':>9}{'p50':>9}{'p99':>9}{'worker':>9}{'handoff':>9}{'MB/s':>9}"
    lines = [
        f"{'':24}{'':7}{'latency per frame, ms':^27}{'of the mean, ms':^18}",
        f"{'method':24}{columns}",
    ]
    for outcome in runs:
        mean, p50, p99, work, rate = outcome.summary()
        lines.append(
            f"{outcome.label:24}{len(outcome.latencies_ns):>7}"
            f"{mean:>9.2f}{p50:>9.2f}{p99:>9.2f}{work:>9.2f}{mean - work:>9.2f}{rate:>9.0f}"
        )
    lines.append("worker: time spent erasing and encoding; handoff: the rest (copies, signals, wake-ups);")
    lines.append("MB/s: frame bytes (10^6) per second of latency")
    return [line.rstrip() for line in lines]


def _load_pypng() -> Any:
    """The optional ``png`` module (pypng), or None.

    pypng is one pure-Python module with no dependencies of its own; it
    writes 8-bit RGB and grayscale PNG through the standard zlib, which is
    all the demo needs.  Pillow would also do, but it is a multi-megabyte
    binary wheel of image libraries for three small files.
    """
    try:
        return importlib.import_module("png")
    except ImportError:
        return None


def _save_image(directory: str, stem: str, pnm: bytes, png: Any) -> str:
    """Write a PPM/PGM image as ``stem.ppm``/``.pgm``, or as ``stem.png`` when ``png`` is given."""
    gray = pnm.startswith(b"P5")
    if png is None:
        filename = f"{stem}.{'pgm' if gray else 'ppm'}"
        with open(os.path.join(directory, filename), "wb") as file:
            file.write(pnm)
        return filename
    _magic, dimensions, _maxval, pixels = pnm.split(b"\n", 3)
    width, height = (int(v) for v in dimensions.split())
    row_bytes = width * (1 if gray else 3)
    rows = [pixels[i * row_bytes : (i + 1) * row_bytes] for i in range(height)]
    filename = f"{stem}.png"
    with open(os.path.join(directory, filename), "wb") as file:
        png.Writer(width, height, greyscale=gray, bitdepth=8).write(file, rows)
    return filename


def _write_images(directory: str, job: Job, runs: list[MethodRun], png: Any) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    done = [outcome for outcome in runs if outcome.last_results is not None]
    frame = done[0].last_input if done else None
    images: list[tuple[str, bytes]] = []
    if frame is not None:
        images.append(("input", pnm_header(False, job.width, job.height) + frame))
    for outcome in done:
        assert outcome.last_results is not None
        images.append((f"{outcome.slug}-erased", outcome.last_results[0]))
        images.append((f"{outcome.slug}-gray", outcome.last_results[1]))
    return [_save_image(directory, stem, pnm, png) for stem, pnm in images]


# ---- the command -------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` or a preset name (small, vga, seed, hd)."""
    if text in SIZE_PRESETS:
        return SIZE_PRESETS[text]
    width_text, separator, height_text = text.lower().partition("x")
    if not separator or not width_text.isdigit() or not height_text.isdigit():
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not WxH (like 640x480) or one of {', '.join(SIZE_PRESETS)}"
        )
    width, height = int(width_text), int(height_text)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels, not {text}")
    return width, height


def _crash_point(text: str) -> tuple[str, int]:
    way, _, count = text.partition(":")
    if way not in ("region", "server"):
        raise argparse.ArgumentTypeError(f"expected region:N or server:N, not {text!r}")
    return way, _positive(count)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="seed 000's image job between two processes, two ways, timed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--frames",
        type=_positive,
        default=DEFAULT_FRAMES,
        metavar="N",
        help=f"frames per way, after one warm-up frame (default {DEFAULT_FRAMES})",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=SIZE_PRESETS[DEFAULT_SIZE],
        metavar="WxH",
        help=f"frame size: WxH or {', '.join(f'{k} ({w}x{h})' for k, (w, h) in SIZE_PRESETS.items())}; "
        f"default {DEFAULT_SIZE}",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="where to write the images (default: a new temporary directory)"
    )
    parser.add_argument("--no-files", action="store_true", help="write no image files")
    parser.add_argument(
        "--format",
        choices=("auto", "png", "pnm"),
        default="auto",
        help="image files: png (needs pypng: pip install 'memipc[demo]'), pnm (PPM/PGM), "
        "or auto: png if pypng is installed (default)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # Internal, for the tests: WAY:N makes that way's worker (region or server) kill itself
    # with SIGKILL on its Nth request, the warm-up frame included.
    parser.add_argument("--crash-worker", type=_crash_point, default=("", 0), help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    width, height = args.size
    png = None if args.no_files or args.format == "pnm" else _load_pypng()
    if args.format == "png" and png is None and not args.no_files:
        print("memipc demo: --format png needs pypng: pip install 'memipc[demo]'", file=sys.stderr)
        return 2
    job = Job(
        width,
        height,
        args.frames,
        args.crash_worker,
        FrameMaker(width, height),
        erase_rectangle(width, height),
    )
    x, y, w, h = job.rectangle
    print(
        f"memipc demo: {job.frames} frames of {width}x{height} RGB ({3 * width * height / 2**20:.1f} MiB) "
        "each way, to a worker process that\n"
        f"  erases the {w}x{h} rectangle at ({x}, {y}) and returns the erased frame (PPM) "
        "and its grayscale (PGM)",
        flush=True,
    )
    progress = Progress(sys.stderr, args.quiet)
    runs: list[MethodRun] = []
    try:
        with _stop_signals_interrupt(), Supervisor() as supervisor:
            runs.append(_run_region_way(job, progress, supervisor))
            runs.append(_run_server_way(job, progress, supervisor))
    except DemoFailed as error:
        print(f"memipc demo: {error}", file=sys.stderr)
        return 1
    except (memipc.Error, OSError) as error:
        print(f"memipc demo: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        progress.clear()
    print()
    print("\n".join(_table(runs)))
    done = [outcome for outcome in runs if outcome.last_results is not None]
    last = WARMUP_FRAMES + job.frames - 1
    if len(done) == 2:
        if done[0].last_results != done[1].last_results:
            print(f"memipc demo: the two ways returned different results for frame {last}", file=sys.stderr)
            return 1
        print(f"Both ways returned byte-identical results for frame {last}.")
    if not args.no_files:
        directory = args.out or tempfile.mkdtemp(prefix="memipc-demo-")
        written = _write_images(directory, job, runs, png)
        print(f"Images of frame {last} in {os.path.abspath(directory)}: {', '.join(written)}")
    return 0
