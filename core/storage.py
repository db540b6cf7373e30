"""Object storage: a small interface with a local-directory backend and an S3 (MinIO) backend.

Keys are '/'-separated relative names such as "videos/<id>/bundle.frs". Every write is atomic:
an object is either absent or complete, never half written, so a reader (the gateway serving a
bundle, a worker downloading a source) can treat "exists" as "ready". Locally that is a write to
a hidden temp file plus `os.replace`; on S3 an object only appears when its upload completes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from core.settings import Settings

CHUNK_SIZE = 1024 * 1024

# A segment starts with a letter or digit, so ".", "..", hidden names and empty segments are
# impossible: a key can never escape its root, whatever a caller passes in.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_KEY_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_PREFIX_RE = re.compile(rf"^({_SEGMENT}/)+$")


class StorageError(Exception):
    """The storage backend failed (I/O error, unreachable endpoint, denied)."""


class ObjectNotFound(LookupError):
    """No object under this key.

    Not a ``StorageError``: a missing object is an answer of a working backend, not a failure of
    it, so a caller that forgets to handle it gets a 404 from the gateway (``service.main``),
    never a 503 "storage unavailable" (and a worker does not retry it as a transient outage)."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix that is not a safe relative name."""


_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def _fs_errors(key: str) -> Iterator[None]:
    """Local file-system failures (disk full, read-only, permission denied) surface as StorageError,
    like an unreachable S3: the gateway answers 503 and a worker retries, instead of an unhandled
    OSError. The message names the key, not the server's path."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"local storage failed on {key}: {exc.strerror or type(exc).__name__}") from exc


def _os_errors(key_arg: int = 0) -> Callable[[_F], _F]:
    """Method decorator: `_fs_errors` around the whole call, naming the key argument."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _fs_errors(str(args[key_arg]) if len(args) > key_arg else "?"):
                return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def check_key(key: str) -> str:
    if not _KEY_RE.match(key) or len(key) > 512:
        raise InvalidKey(f"invalid storage key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix) or len(prefix) > 512:
        raise InvalidKey(f"invalid storage prefix {prefix!r} (must be a folder ending in '/')")
    return prefix


class Storage(ABC):
    """What the service needs from object storage, nothing more."""

    @abstractmethod
    def put_file(self, src: Path, key: str, *, move: bool = False) -> int:
        """Store a local file under key; `move` lets the backend consume src. Returns bytes stored."""

    @abstractmethod
    def put_stream(self, stream: BinaryIO, key: str) -> int:
        """Store everything read from stream (read in chunks, never whole in memory)."""

    def put_bytes(self, data: bytes, key: str) -> None:
        import io

        self.put_stream(io.BytesIO(data), key)

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> int:
        """Copy the object to a local file (written atomically). Raises ObjectNotFound."""

    @abstractmethod
    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes start..end (inclusive; None = to the end) in chunks. Raises ObjectNotFound."""

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_range(key))

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes. Raises ObjectNotFound."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete one object; True when it existed."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a folder prefix ("videos/<id>/"); returns how many."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under a folder prefix, recursively."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageError unless the backend is reachable and usable."""


class LocalStorage(Storage):
    """Objects as files under a root directory; temp files in a hidden sibling folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        # Inside the root so os.replace never crosses a filesystem; keys cannot name it (leading dot).
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._sweep_tmp()

    def _sweep_tmp(self, max_age_s: float = 86_400) -> None:
        """Temp files of writes interrupted by a crash; a day old is certainly not in flight."""
        cutoff = time.time() - max_age_s
        for path in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _tmp_path(self) -> Path:
        return self._tmp / uuid.uuid4().hex

    def _commit(self, tmp: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)

    @_os_errors(key_arg=1)
    def put_file(self, src: Path, key: str, *, move: bool = False) -> int:
        check_key(key)
        src = Path(src)
        tmp = self._tmp_path()
        try:
            if move:
                try:
                    os.replace(src, tmp)  # same filesystem: no copy
                except OSError:
                    shutil.copyfile(src, tmp)
                    src.unlink()
            else:
                shutil.copyfile(src, tmp)
            _fsync_file(tmp)
            size = tmp.stat().st_size
            self._commit(tmp, key)
            return size
        except FileNotFoundError as exc:
            raise StorageError(f"cannot store {key}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put_stream(self, stream: BinaryIO, key: str) -> int:
        check_key(key)
        tmp = self._tmp_path()
        size = 0
        try:
            with _fs_errors(key):
                f = open(tmp, "wb")  # noqa: SIM115 - closed below
            with f:
                # Errors reading `stream` are the caller's and propagate as they are.
                while chunk := stream.read(CHUNK_SIZE):
                    with _fs_errors(key):
                        f.write(chunk)
                    size += len(chunk)
                with _fs_errors(key):
                    f.flush()
                    os.fsync(f.fileno())
            with _fs_errors(key):
                self._commit(tmp, key)
            return size
        finally:
            with contextlib.suppress(OSError):  # cleanup must not hide the error that got us here
                tmp.unlink(missing_ok=True)

    @_os_errors()
    def get_file(self, key: str, dest: Path) -> int:
        path = self._path(key)
        dest = Path(dest)
        part = dest.with_name(dest.name + f".{uuid.uuid4().hex[:8]}.part")
        try:
            shutil.copyfile(path, part)
        except FileNotFoundError as exc:
            part.unlink(missing_ok=True)
            raise ObjectNotFound(key) from exc
        os.replace(part, dest)
        return dest.stat().st_size

    @_os_errors()
    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            # Opened before the generator starts so a missing object fails at the call, and a
            # concurrent delete cannot cut a stream short (the open fd keeps the data).
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        return _FileRange(f, start, end)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @_os_errors()
    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    @_os_errors()
    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    @_os_errors()
    def delete_prefix(self, prefix: str) -> int:
        folder = self.root / check_prefix(prefix)
        if not folder.is_dir():
            return 0
        # Rename first: readers then see the whole folder vanish at once, not file by file.
        doomed = self._tmp_path()
        try:
            os.replace(folder, doomed)
        except FileNotFoundError:
            return 0
        count = sum(1 for p in doomed.rglob("*") if p.is_file())
        shutil.rmtree(doomed, ignore_errors=True)
        return count

    def list(self, prefix: str) -> Iterator[str]:
        folder = self.root / check_prefix(prefix)
        if not folder.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in sorted(filenames):
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def ping(self) -> None:
        probe = self._tmp / f"ping-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"local storage at {self.root} is not writable: {exc}") from exc


class _FileRange(Iterator[bytes]):
    """The chunks of a byte range of an open file. `close()` closes the file at once, also before the
    first chunk (a generator that never started would keep it open until garbage collection)."""

    def __init__(self, f: BinaryIO, start: int, end: int | None) -> None:
        self._file = f
        self._chunks = _read_range(f, start, end)

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._file.close()


def _read_range(f: BinaryIO, start: int, end: int | None) -> Generator[bytes, None, None]:
    with f:
        f.seek(start)
        remaining = None if end is None else end - start + 1
        while remaining is None or remaining > 0:
            chunk = f.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; best effort (not every filesystem allows it).
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_storage(settings: Settings) -> Storage:
    """The backend the settings name: S3 (``core.storage_s3``) or a local folder."""
    if settings.storage_backend == "s3":
        from core.storage_s3 import S3Storage

        secret = settings.s3_secret_access_key
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return LocalStorage(settings.local_storage_dir)
