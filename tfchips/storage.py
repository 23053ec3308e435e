"""Where output bytes go: local paths, or any URL Apache Beam's FileSystems knows.

Local files are written to a temporary name in the same folder and renamed, so a
killed run never leaves a truncated file; object stores (``gs://``, ``s3://``)
publish an object only when its upload completes, which gives the same guarantee.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from tfchips.errors import OutputError

PARTIAL_PREFIX = ".partial-"


def _read_umask() -> int:
    # Read once at import: os.umask can only be read by setting it, which races with threads.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()


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
    """Write ``data`` to ``path`` all at once: readers see the whole file or none of it.

    A local write that fails (no space left, no permission) raises `OutputError`
    naming ``path``, and leaves neither a temporary file nor a changed ``path``.
    """
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as stream:
            stream.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OutputError(error.errno, error.strerror or str(error), folder) from None
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp makes files private; published files get the usual umask permissions.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            # A full disk or a read-only folder stops the job: say which file could not be written.
            raise OutputError(error.errno, error.strerror or str(error), path) from None
        raise


def sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, local or URL, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        opened = FileSystems.open(path)
    else:
        opened = open(path, "rb")
    with opened as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(path: str) -> bytes:
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as stream:
            return stream.read()
    with open(path, "rb") as stream:
        return stream.read()


def remove(path: str) -> None:
    """Delete a file, local or URL."""
    if is_url(path):
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete([path])
    else:
        os.remove(path)


def remove_partial_files(folder: str) -> int:
    """Delete temporary files a killed local run left in ``folder``; returns how many."""
    if is_url(folder) or not os.path.isdir(folder):
        return 0
    partial = [name for name in os.listdir(folder) if name.startswith(PARTIAL_PREFIX)]
    for name in partial:
        os.remove(os.path.join(folder, name))
    return len(partial)


def glob(pattern: str) -> list[str]:
    """Paths matching ``pattern`` (``*`` in the file name), local or URL, sorted."""
    if is_url(pattern):
        from apache_beam.io.filesystems import FileSystems

        return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    import glob as local

    return sorted(local.glob(pattern))
