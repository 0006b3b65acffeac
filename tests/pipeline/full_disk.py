"""A full disk, injected at the write call of the one atomic writer (engine/atomic.py):
tests cannot mount a small file system, so the file object it opens fails as a full one
does, with ENOSPC once `after_bytes` bytes have been written."""
import errno
import io

from retrain.engine import atomic


class _FullFile(io.FileIO):
    limit = 0

    def write(self, data):
        room = self.limit - self.tell()
        if len(data) > room:
            if room > 0:
                super().write(bytes(memoryview(data).cast("B")[:room]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def fill_disk_at_write(monkeypatch, after_bytes=0, binary_only=False):
    """Until the test ends, every atomic write (of bytes only, with `binary_only`: model
    files and cache shards) fails with ENOSPC once a file reaches `after_bytes`."""
    def full_open(fd, mode, encoding=None, newline=None):
        if binary_only and mode != "wb":
            return open(fd, mode, encoding=encoding, newline=newline)
        raw = type("Full", (_FullFile,), {"limit": after_bytes})(fd, "w")
        if mode == "wb":
            return io.BufferedWriter(raw)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, newline=newline)

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
