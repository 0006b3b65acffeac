"""Atomic writes, streamed hashing and the relative-path guards."""
import hashlib
import json
import os
import stat

import pytest

from retrain.errors import ConfigError, DataError
from retrain.files import (atomic_write, atomic_write_bytes, atomic_write_json,
                           atomic_write_text, relative_posix, resolve_relative,
                           sha256_file)


def test_atomic_writes_text_bytes_and_json(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    atomic_write_json(tmp_path / "c.json", {"name": "日本", "n": [1, 2]})
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode("utf-8")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert "日本" in text and text.endswith("}\n")
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"name": "日本", "n": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(target) as handle:
            handle.write("half of the new conte")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_the_new_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as handle:
        handle.write("part one")
        assert not target.exists()
        temps = list(tmp_path.iterdir())
        assert len(temps) == 1 and temps[0].name.startswith(".out.txt.")
    assert target.read_text() == "part one"


def test_permissions_follow_the_umask_like_open(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ConfigError, match=r"mode 'w' or 'wb'. Received: mode='a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_sha256_file_streams_and_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 123)                # several 1 MiB chunks plus a tail
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_relative_posix(tmp_path):
    assert relative_posix(tmp_path / "a" / "b c" / "é.png", tmp_path) == "a/b c/é.png"
    with pytest.raises(DataError, match=r"is not inside"):
        relative_posix(tmp_path.parent / "x.png", tmp_path)


@pytest.mark.parametrize("relative", ["../etc/passwd", "a/../../x", "/etc/passwd", "", "."])
def test_resolve_relative_refuses_escapes(tmp_path, relative):
    with pytest.raises(DataError, match=r"refusing the path"):
        resolve_relative(tmp_path, relative)


def test_resolve_relative_joins_plain_relative_paths(tmp_path):
    assert resolve_relative(tmp_path, "cats/nested/日本.png") == tmp_path / "cats/nested/日本.png"
    assert resolve_relative(tmp_path, "./cats/a.png") == tmp_path / "cats" / "a.png"
