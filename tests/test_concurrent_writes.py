"""Concurrent writers of one file never collide (issue 23, item 7): identical pictures under different URLs are
stored by threads and processes at the same moment, and `open_atomically` targets can be written twice at once.

Each writer's temporary name is its own (process, thread, attempt), so every writer ends in a rename of a whole
file; the last one wins. Checked on local paths and on an object-store-like Beam filesystem defined here:
Apache Beam's Python SDK has no in-memory filesystem (`FileSystem.get_all_subclasses()` in 2.77 lists local,
GCS, S3, Azure and HDFS only), so `objstore://` emulates GCS/S3 with objects in one flat folder (shared by
processes): an object appears whole when its writer closes it, and a rename is a copy followed by a delete,
overwriting the target. `noclobber://` refuses to rename over an existing object, as HDFS does.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote

import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from pipeline.core.files import open_atomically, temporary_path, write_atomically
from pipeline.images.store import ImageStore

THREADS = 16
PROCESSES = 3
ROUNDS = 5
BACKING_ENV = "M3W_TEST_OBJECT_STORE_DIR"  # the folder behind objstore:// and noclobber:// (inherited by processes)


class _ObjectWriter(io.BytesIO):
    """An upload: nothing is visible under the object's name until `close`, then all of it at once."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def close(self) -> None:
        if not self.closed:
            _put_object(self.target, self.getvalue())
        super().close()


def _backing(path: str) -> str:
    return os.path.join(os.environ[BACKING_ENV], quote(path, safe=""))


def _put_object(path: str, data: bytes) -> None:
    private = f"{_backing(path)}.upload-{os.getpid()}-{threading.get_ident()}"
    with open(private, "wb") as handle:
        handle.write(data)
    os.replace(private, _backing(path))


class ObjectStoreLikeFileSystem(FileSystem):
    """A flat key space with GCS's rename (copy, then delete the source); no directories."""

    COPY_LATENCY_S = 0.002  # a remote copy takes time; without it the race windows are too short to meet

    @classmethod
    def scheme(cls) -> str:
        return "objstore"

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        return None

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        for name in os.listdir(os.environ[BACKING_ENV]):
            key = unquote(name)
            if key.startswith(dir_or_prefix) and ".upload-" not in name:
                yield FileMetadata(key, os.path.getsize(os.path.join(os.environ[BACKING_ENV], name)))

    def create(self, path: str, mime_type: str = "application/octet-stream",
               compression_type: str = CompressionTypes.AUTO) -> _ObjectWriter:
        return _ObjectWriter(path)

    def open(self, path: str, mime_type: str = "application/octet-stream",
             compression_type: str = CompressionTypes.AUTO) -> io.BytesIO:
        with open(_backing(path), "rb") as handle:  # a missing object: FileNotFoundError
            return io.BytesIO(handle.read())

    def _refuses(self, destination: str) -> bool:
        return False

    def copy(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        errors = {}
        for source, destination in zip(source_file_names, destination_file_names):
            try:
                if self._refuses(destination):
                    raise FileExistsError(f"{destination} exists")
                with open(_backing(source), "rb") as handle:
                    data = handle.read()
                time.sleep(self.COPY_LATENCY_S)
                _put_object(destination, data)
            except OSError as error:
                errors[(source, destination)] = error
        if errors:
            raise BeamIOError("copy failed", errors)

    def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return os.path.exists(_backing(path))

    def size(self, path: str) -> int:
        return os.path.getsize(_backing(path))

    def last_updated(self, path: str) -> float:
        return os.path.getmtime(_backing(path))

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths: list[str]) -> None:
        errors = {}
        for path in paths:
            try:
                os.unlink(_backing(path))
            except OSError as error:
                errors[path] = error
        if errors:
            raise BeamIOError("delete failed", errors)


class NoClobberFileSystem(ObjectStoreLikeFileSystem):
    """Like HDFS: a rename onto an existing name fails."""

    @classmethod
    def scheme(cls) -> str:
        return "noclobber"

    def _refuses(self, destination: str) -> bool:
        return self.exists(destination)


@pytest.fixture
def object_store(tmp_path, monkeypatch) -> str:
    backing = tmp_path / "objects"
    backing.mkdir()
    monkeypatch.setenv(BACKING_ENV, str(backing))
    return str(backing)


def _leftovers(root: str) -> list[str]:
    """Temporary files or objects under `root` (a local folder or the object store's backing folder)."""
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
                  if "inprogress" in name or ".upload-" in name)


def _all_at_once(task: Callable[[int], None], workers: int = THREADS) -> None:
    """Run `task(index)` in `workers` threads released together by a barrier; re-raise any failure."""
    start = threading.Barrier(workers)

    def run(index: int) -> None:
        start.wait()
        task(index)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(run, index) for index in range(workers)]:
            future.result()


def _pictures(count: int) -> list[bytes]:
    return [f"picture {n} ".encode() * 400 for n in range(count)]


def _store_in_threads(root: str, pictures: list[bytes]) -> None:
    """THREADS threads store every picture ROUNDS times, each starting at a different one: many same-picture
    collisions and many different pictures in flight at once."""
    store = ImageStore(root)

    def store_all(index: int) -> None:
        for round_ in range(ROUNDS):
            for offset in range(len(pictures)):
                store.put(pictures[(index + offset + round_) % len(pictures)])

    _all_at_once(store_all)


def _store_roots(tmp_path, object_store: str) -> dict[str, tuple[str, str]]:
    """Store root → the folder where its temporaries would be left."""
    return {"local": (str(tmp_path / "images"), str(tmp_path / "images")),
            "objstore": ("objstore://bucket/work/images", object_store)}


@pytest.mark.parametrize("where", ["local", "objstore"])
def test_threads_storing_the_same_pictures_at_once_never_fail_and_leave_whole_files(tmp_path, object_store, where):
    root, folder = _store_roots(tmp_path, object_store)[where]
    pictures = _pictures(4)
    _store_in_threads(root, pictures)
    store = ImageStore(root)
    for picture in pictures:
        sha = store.put(picture)
        assert store.get(sha) == picture  # read back and checked against its sha256
    assert _leftovers(folder) == []


def _store_in_a_process(root: str) -> None:
    _store_in_threads(root, _pictures(4))


@pytest.mark.parametrize("where", ["local", "objstore"])
def test_processes_with_threads_storing_the_same_pictures_never_fail(tmp_path, object_store, where):
    root, folder = _store_roots(tmp_path, object_store)[where]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_store_in_a_process, args=(root,)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    store = ImageStore(root)
    assert all(store.verified(store.put(picture)) for picture in _pictures(4))
    assert _leftovers(folder) == []


@pytest.mark.parametrize("where", ["local", "objstore"])
def test_open_atomically_from_many_threads_leaves_one_writers_whole_file(tmp_path, object_store, where):
    base, folder = (str(tmp_path), str(tmp_path)) if where == "local" else ("objstore://bucket", object_store)
    same, mixed = f"{base}/same.bin", f"{base}/mixed.bin"
    contents = [bytes([index]) * 50_000 for index in range(THREADS)]

    def write_both(index: int) -> None:
        for _ in range(ROUNDS):
            write_atomically(same, b"identical " * 5_000)
            with open_atomically(mixed) as handle:  # streamed in pieces: a torn write would mix writers
                for start in range(0, len(contents[index]), 10_000):
                    handle.write(contents[index][start:start + 10_000])

    _all_at_once(write_both)
    with FileSystems.open(same, compression_type="uncompressed") as handle:
        assert handle.read() == b"identical " * 5_000
    with FileSystems.open(mixed, compression_type="uncompressed") as handle:
        assert handle.read() in contents  # whole, and one writer's
    assert _leftovers(folder) == []


def test_a_filesystem_that_will_not_rename_over_a_file_accepts_the_same_content_only(object_store):
    """HDFS-like: the second writer of identical bytes succeeds (the target already holds them); a writer of
    different bytes fails as before, and neither leaves its temporary behind."""
    picture = _pictures(1)[0]
    _store_in_threads("noclobber://bucket/images", [picture])
    assert ImageStore("noclobber://bucket/images").verified(ImageStore("noclobber://bucket/images").put(picture))
    write_atomically("noclobber://bucket/a.json", b"{}")
    write_atomically("noclobber://bucket/a.json", b"{}")
    with pytest.raises(BeamIOError, match="exists"):
        write_atomically("noclobber://bucket/a.json", b"{ }")
    with FileSystems.open("noclobber://bucket/a.json", compression_type="uncompressed") as handle:
        assert handle.read() == b"{}"
    assert _leftovers(object_store) == []


def test_a_failed_write_to_an_object_store_leaves_the_old_object_and_no_temporary(object_store):
    write_atomically("objstore://bucket/shard.tar", b"old")
    with pytest.raises(RuntimeError, match="lost"):
        with open_atomically("objstore://bucket/shard.tar") as handle:
            handle.write(b"half")
            raise RuntimeError("lost")
    with FileSystems.open("objstore://bucket/shard.tar", compression_type="uncompressed") as handle:
        assert handle.read() == b"old"
    assert os.listdir(object_store) == [quote("objstore://bucket/shard.tar", safe="")]


def test_temporary_names_differ_per_thread_and_per_attempt_and_name_the_process():
    names: list[str] = []
    _all_at_once(lambda _: names.extend([temporary_path("/w/x.json"), temporary_path("/w/x.json")]), workers=4)
    assert len(set(names)) == 8
    assert all(name.startswith(f"/w/x.json.inprogress-{os.getpid()}-") for name in names)
    assert len({name.split("-")[2] for name in names}) == 4  # one thread id per thread
