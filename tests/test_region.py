"""Region in one process: create / open / open_or_create / open_file, scopes,
permissions, access modes, persistence, info, close and unlink (SPEC §3)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import memipc
from memipc import Region


def test_create_then_open_by_name_shares_the_bytes(name: str) -> None:
    with Region.create(name, 1000) as creator, Region.open(name) as opener:
        creator.buf[10:15] = b"hello"
        assert bytes(opener.buf[10:15]) == b"hello"
        opener.buf[0] = 7
        assert creator.buf[0] == 7
        assert creator.created and not opener.created
        assert creator.size == opener.size == 1000


def test_size_is_the_logical_size_not_a_page_multiple(name: str) -> None:
    with Region.create(name, 4097) as region:
        assert region.size == 4097
        assert len(region.buf) == 4097
        assert region.info().size == 4097


@pytest.mark.parametrize("size", [0, -1])
def test_empty_or_negative_sizes_raise_value_error(name: str, size: int) -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        Region.create(name, size)


def test_sizes_beyond_any_file_system_raise_os_error(name: str, os_path: Callable[[str], str]) -> None:
    with pytest.raises(OSError) as caught:
        Region.create(name, 2**62)
    assert caught.value.errno in (errno.EFBIG, errno.ENOSPC, errno.EINVAL)
    assert not os.path.exists(os_path(name))


def test_non_integer_sizes_raise_type_error(name: str) -> None:
    with pytest.raises(TypeError):
        Region.create(name, 10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Region.create(name, True)


def test_create_of_a_taken_name_raises_exists_error(name: str) -> None:
    with Region.create(name, 10):
        with pytest.raises(memipc.ExistsError, match=r"already taken") as caught:
            Region.create(name, 10)
        assert isinstance(caught.value, FileExistsError)


def test_open_of_a_missing_name_raises_not_found_error_with_advice(name: str) -> None:
    with pytest.raises(memipc.NotFoundError, match=r"Region\.create") as caught:
        Region.open(name)
    assert isinstance(caught.value, FileNotFoundError)


def test_open_or_create_creates_once_then_opens(name: str) -> None:
    with Region.open_or_create(name, 64) as first, Region.open_or_create(name, 64) as second:
        assert first.created is True
        assert second.created is False
        first.buf[0] = 1
        assert second.buf[0] == 1


def test_open_or_create_with_a_different_size_is_refused(name: str) -> None:
    with Region.create(name, 64), pytest.raises(ValueError, match="exists with size 64"):
        Region.open_or_create(name, 128)


def test_last_close_removes_a_memory_backed_region(name: str, os_path: Callable[[str], str]) -> None:
    first = Region.create(name, 10)
    second = Region.open(name)
    first.close()
    assert os.path.exists(os_path(name))  # still in use by `second`
    second.close()
    assert not os.path.exists(os_path(name))
    with pytest.raises(memipc.NotFoundError):
        Region.open(name)


def test_persistent_regions_outlive_their_last_close_until_unlink(name: str) -> None:
    with Region.create(name, 10, persist=True) as region:
        region.buf[0] = 42
        assert region.persist
    with Region.open(name) as again:
        assert again.buf[0] == 42
        again.unlink()
    with pytest.raises(memipc.NotFoundError):
        Region.open(name)


def test_unlink_removes_the_name_but_open_handles_keep_the_data(name: str) -> None:
    with Region.create(name, 10) as region:
        region.buf[0] = 9
        region.unlink()
        with pytest.raises(memipc.NotFoundError):
            Region.open(name)
        assert region.buf[0] == 9
        with Region.create(name, 20) as newer:  # the name is free for a new object
            assert newer.size == 20
        region.unlink()  # idempotent, and never removes the newer object


def test_close_is_idempotent_and_closed_handles_raise_closed_error(name: str) -> None:
    region = Region.create(name, 10)
    region.close()
    region.close()
    assert region.closed
    with pytest.raises(memipc.ClosedError, match="closed"):
        region.buf  # noqa: B018
    with pytest.raises(memipc.ClosedError):
        region.view(0, 1)
    with pytest.raises(memipc.ClosedError):
        region.info()


def test_repr_shows_name_kind_and_size(name: str) -> None:
    with Region.create(name, 123) as region:
        text = repr(region)
        assert name in text and "region" in text and "123" in text
    assert "closed" in repr(region)


def test_region_constructor_is_not_public() -> None:
    with pytest.raises(TypeError, match="not public"):
        Region(object())


def test_info_describes_the_header_and_live_users(name: str) -> None:
    with Region.create(name, 5000) as region, Region.open(name) as other:
        info = region.info()
        assert info.name == name
        assert info.kind == "region"
        assert info.size == 5000
        assert info.path is None
        assert info.creator_pid == os.getpid()
        assert info.created_time is not None
        assert abs(info.created_time - __import__("time").time()) < 600
        assert info.attached_pids == (os.getpid(), os.getpid())
        assert info.abi_version == memipc._core.ABI_VERSION
        assert info == other.info()
    with Region.open_or_create(name, 5000) as alone:
        assert alone.info().attached_pids == (os.getpid(),)


def test_user_scope_is_owner_only_and_mode_sets_permissions(
    names: Callable[[], str], os_path: Callable[[str], str]
) -> None:
    private, shared = names(), names()
    with Region.create(private, 10), Region.create(shared, 10, mode=0o640):
        assert stat.S_IMODE(os.stat(os_path(private)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os_path(shared)).st_mode) == 0o640


def test_global_scope_defaults_to_group_access_and_is_a_separate_namespace(name: str) -> None:
    with Region.create(f"Global\\{name}", 10) as shared:
        assert shared.scope == "global"
        path = memipc._platform.current.segment_path(shared.info().os_name or "")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(memipc.NotFoundError, match="scope='global'"):
            Region.open(name)
        with Region.open(name, scope="global") as again:
            assert again.scope == "global"
        with Region.create(name, 10) as private:  # same bare name, other scope
            assert private.scope == "user"


@pytest.mark.parametrize("mode", [0o1777, -1, "0600", 0o400])
def test_bad_modes_are_refused(name: str, mode: object) -> None:
    with pytest.raises(ValueError, match="mode"):
        Region.create(name, 10, mode=mode)  # type: ignore[arg-type]


def test_read_only_access_refuses_writes_without_crashing(name: str) -> None:
    with Region.create(name, 10) as region, Region.open(name, access="r") as reader:
        region.buf[0] = 5
        assert reader.buf[0] == 5
        assert reader.buf.readonly
        with pytest.raises(TypeError):
            reader.buf[0] = 1
        with reader.view(0, 4) as view, pytest.raises(PermissionError, match="read-only"):
            view.write(0, b"x")
        with pytest.raises(PermissionError, match="access='rw'"):
            reader.view(0, 4, access="rw")


def test_copy_access_keeps_writes_private(name: str) -> None:
    with Region.create(name, 10) as region, Region.open(name, access="copy") as private:
        region.buf[0] = 1
        private.buf[0] = 2
        assert region.buf[0] == 1
        assert private.buf[0] == 2


def test_bad_access_values_are_refused(name: str) -> None:
    with Region.create(name, 10), pytest.raises(ValueError, match="access"):
        Region.open(name, access="w")  # type: ignore[arg-type]


def test_opening_a_region_as_another_kind_raises_kind_mismatch_naming_both(name: str) -> None:
    with Region._create(memipc._names.parse(name), 64, kind="queue") as queue_region:
        assert queue_region.kind == "queue"
        with pytest.raises(memipc.KindMismatchError, match=r"as a region: it holds a queue"):
            Region.open(name)


def test_file_backed_regions_keep_their_data_in_the_file(name: str, tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    with Region.create(name, 100, path=path) as region:
        assert region.path == str(path)
        region.buf[:5] = b"saved"
        region.flush()
        with Region.open(name) as other:
            assert other.path == str(path)
            assert bytes(other.buf[:5]) == b"saved"
    assert path.read_bytes()[:5] == b"saved"  # the file is exactly the data, no header
    assert path.stat().st_size == 100
    with Region.create(name, 200, path=path) as again:  # existing data is kept and the file grows
        assert bytes(again.buf[:5]) == b"saved"
    assert path.stat().st_size == 200


def test_open_file_maps_any_file_and_grows_it_on_request(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"abcdef")
    with Region.open_file(path) as region:
        assert region.size == 6
        assert region.kind == "raw"
        assert bytes(region.buf) == b"abcdef"
        region.buf[0:1] = b"A"
    assert path.read_bytes() == b"Abcdef"
    with Region.open_file(path, size=10) as grown:
        assert grown.size == 10
    assert path.stat().st_size == 10
    with pytest.raises(ValueError, match="cannot grow"):
        Region.open_file(path, access="r", size=20)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        Region.open_file(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        Region.open_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        Region.open_file(tmp_path, access="rw")


def test_raw_open_attaches_to_headerless_segments_of_other_programs(name: str) -> None:
    raw_name = f"{name}-foreign"
    path = memipc._platform.current.segment_path(raw_name)
    with open(path, "wb") as f:
        f.write(b"from C" + bytes(100))
    try:
        with Region.open(f"/{raw_name}", raw=True) as region:
            assert region.size == 106
            assert bytes(region.buf[:6]) == b"from C"
            assert region.kind == "raw"
        assert os.path.exists(path)  # closing a raw mapping never removes it
        with Region.open(raw_name, raw=True) as region:
            region.unlink()
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    with pytest.raises(memipc.NotFoundError, match="shm_open"):
        Region.open(raw_name, raw=True)


def test_out_of_space_is_an_os_error_at_create_time_not_a_crash_later(
    name: str, os_path: Callable[[str], str]
) -> None:
    total = os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize
    with pytest.raises(OSError, match="/dev/shm") as caught:
        Region.create(name, total + 2**30)
    assert caught.value.errno == errno.ENOSPC
    assert not os.path.exists(os_path(name))


def test_sparse_regions_larger_than_memory_need_reserve_false(name: str) -> None:
    size = 2**40  # 1 TiB: more than this machine has
    with Region.create(name, size, reserve=False) as region:
        assert region.size == size
        with region.view(size - 10, 10) as tail:
            tail.write(0, b"end")
            assert tail.read(0, 3) == b"end"


def test_views_at_any_offset_hide_the_alignment(name: str) -> None:
    with Region.create(name, 3 * 4096 + 5) as region:
        region.buf[:] = bytes(i % 251 for i in range(region.size))
        for offset in (0, 1, 4095, 4096, 4097, 8191, 3 * 4096 + 4):
            with region.view(offset) as view:
                assert view.offset == offset
                assert len(view) == region.size - offset
                assert view.read(0, 1) == bytes([offset % 251])


@pytest.mark.parametrize(
    ("offset", "length", "error"),
    [
        (-1, 1, IndexError),
        (100, 1, IndexError),
        (99, 2, IndexError),
        (0, 0, ValueError),
        (0, -5, ValueError),
        (2**63, 1, IndexError),
    ],
)
def test_view_bounds_are_checked(name: str, offset: int, length: int, error: type[Exception]) -> None:
    with Region.create(name, 100) as region, pytest.raises(error):
        region.view(offset, length)


def test_closing_a_region_closes_its_views(name: str) -> None:
    region = Region.create(name, 100)
    view = region.view(0, 10)
    region.close()
    assert view.closed
    with pytest.raises(memipc.ClosedError):
        view.read(0, 1)


def test_closing_a_region_with_exported_buffers_raises_buffer_error_and_stays_open(name: str) -> None:
    region = Region.create(name, 100)
    view = region.view(0, 10)
    exported = view.buf[2:4]
    with pytest.raises(BufferError, match="still"):
        region.close()
    assert not region.closed
    exported[0] = 1
    assert region.buf[2] == 1
    exported.release()
    region.close()
    assert region.closed


def test_a_forked_child_closing_its_copy_does_not_remove_the_parents_region(
    name: str, os_path: Callable[[str], str]
) -> None:
    with Region.create(name, 10) as region:
        pid = os.fork()
        if pid == 0:  # child: close the inherited handle and leave at once
            try:
                region.close()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert os.path.exists(os_path(name))
        assert region.info().attached_pids == (os.getpid(),)
    assert not os.path.exists(os_path(name))
