"""A Beam file system held in this process, ``memchips://``: a chip folder that no ``os`` call can reach.

For DirectRunner ``in_memory`` tests: the files live in a class attribute of the test process.
A folder may also be *virtual*: ``virtual[root] = n`` makes its listing hold n chip pairs
that are never stored, for building (not running) a pipeline over a million chips.
"""

from __future__ import annotations

import io

from apache_beam.io.filesystem import FileMetadata, FileSystem

SCHEME = "memchips"


class _Upload(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            MemoryFileSystem.files[self._path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    files: dict[str, bytes] = {}
    virtual: dict[str, int] = {}
    listed: list[str] = []

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, base, *paths):
        return "/".join([base.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        MemoryFileSystem.listed.append(prefix)
        for path, data in sorted(self.files.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data))
        for root, count in self.virtual.items():
            for i in range(count) if root.startswith(prefix) or prefix.startswith(root) else ():
                for side in ("images", "labels"):
                    yield FileMetadata(f"{root}/{side}/256#0#10.0#13#{i % 1000}#{i // 1000}.tif", 1000)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Upload(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in self.files:
            raise IOError(f"{path}: no such object")
        return io.BytesIO(self.files[path])

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            self.files[destination] = self.files[source]

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            self.files[destination] = self.files.pop(source)

    def exists(self, path):
        return path in self.files

    def size(self, path):
        return len(self.files[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(self.files[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.files[path]))

    def delete(self, paths):
        for path in paths:
            self.files.pop(path, None)
