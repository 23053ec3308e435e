"""Where output bytes go: local paths, or any URL Apache Beam's FileSystems knows.

Local files are written to a temporary name in the same folder and renamed, so a
killed run never leaves a truncated file; object stores (``gs://``, ``s3://``)
publish an object only when its upload completes, which gives the same guarantee.
"""

from __future__ import annotations

import os
import tempfile

PARTIAL_PREFIX = ".partial-"


def is_url(path: str) -> bool:
    return "://" in str(path)


def join(folder: str, *names: str) -> str:
    if is_url(folder):
        return "/".join([folder.rstrip("/"), *names])
    return os.path.join(folder, *names)


def exists(path: str) -> bool:
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.isfile(path)


def publish(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: readers see the whole file or none of it."""
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as stream:
            stream.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read(path: str) -> bytes:
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as stream:
            return stream.read()
    with open(path, "rb") as stream:
        return stream.read()


def remove_partial_files(folder: str) -> int:
    """Delete temporary files a killed local run left in ``folder``; returns how many."""
    if is_url(folder) or not os.path.isdir(folder):
        return 0
    partial = [name for name in os.listdir(folder) if name.startswith(PARTIAL_PREFIX)]
    for name in partial:
        os.remove(os.path.join(folder, name))
    return len(partial)
