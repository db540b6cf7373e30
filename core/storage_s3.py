"""The S3 (MinIO) backend of ``core.storage``, through boto3 (the ``s3`` extra; imported lazily)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from core.storage import CHUNK_SIZE, ObjectNotFound, Storage, StorageError, check_key, check_prefix


class S3Storage(Storage):
    """S3 or MinIO through boto3. An object becomes visible only once its upload completes."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any = None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StorageError("the S3 backend needs boto3: pip install 'framers-service[s3]'") from exc
        self.bucket = bucket
        self.prefix = prefix
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _errors(self, key: str) -> Any:
        return _S3Errors(key)

    def put_file(self, src: Path, key: str, *, move: bool = False) -> int:
        src = Path(src)
        with self._errors(key):
            size = src.stat().st_size
            self._client.upload_file(str(src), self.bucket, self._k(key))
        if move:
            src.unlink(missing_ok=True)
        return size

    def put_stream(self, stream: BinaryIO, key: str) -> int:
        counter = _CountingReader(stream)
        with self._errors(key):
            self._client.upload_fileobj(counter, self.bucket, self._k(key))
        return counter.count

    def get_file(self, key: str, dest: Path) -> int:
        dest = Path(dest)
        part = dest.with_name(dest.name + f".{uuid.uuid4().hex[:8]}.part")
        try:
            with self._errors(key):
                self._client.download_file(self.bucket, self._k(key), str(part))
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return dest.stat().st_size

    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._k(key)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        with self._errors(key):
            body = self._client.get_object(**kwargs)["Body"]
        return _iter_body(body)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except ObjectNotFound:
            return False

    def size(self, key: str) -> int:
        with self._errors(key):
            return int(self._client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"])

    def delete(self, key: str) -> bool:
        existed = self.exists(key)
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._k(key))
        return existed

    def delete_prefix(self, prefix: str) -> int:
        keys = [self.prefix + k for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):  # the DeleteObjects limit
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            with self._errors(prefix):
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def list(self, prefix: str) -> Iterator[str]:
        full = self.prefix + check_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix) :]

    def ping(self) -> None:
        with self._errors(self.bucket):
            self._client.head_bucket(Bucket=self.bucket)


class _S3Errors:
    """Maps botocore errors to ObjectNotFound / StorageError."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, (StorageError, ObjectNotFound)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise ObjectNotFound(self.key) from exc
            raise StorageError(f"S3 error on {self.key}: {code} {exc}") from exc
        if isinstance(exc, BotoCoreError):
            raise StorageError(f"S3 unreachable ({self.key}): {exc}") from exc
        if isinstance(exc, FileNotFoundError):
            raise StorageError(f"cannot store {self.key}: {exc}") from exc
        return False


class _CountingReader:
    """File-like wrapper counting the bytes boto3 reads (upload_fileobj has no return value)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def _iter_body(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_SIZE)
    finally:
        body.close()
