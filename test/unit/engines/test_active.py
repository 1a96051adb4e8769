from airside_perception.engines.active import ActiveVersions


def test_round_trip_and_restart(tmp_path):
    path = tmp_path / "state" / "active.yaml"
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    assert a.version("detection") == "1.0.0" and "not found" in a.warning
    a.set("detection", "1.1.0")
    assert ActiveVersions(str(path), {"detection": "1.0.0"}).version("detection") == "1.1.0"
    assert not list(path.parent.glob(".tmp-*")), "temporary file left behind"


def test_corrupt_state_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "active.yaml"
    path.write_text("detection: [1.1.0\n")
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    assert a.version("detection") == "1.0.0" and "unreadable" in a.warning


def test_full_disk_keeps_the_old_state(tmp_path, monkeypatch):
    import errno
    import os as _os

    path = tmp_path / "active.yaml"
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    a.set("detection", "1.1.0")

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_os, "fsync", no_space)
    import pytest

    with pytest.raises(OSError, match="No space"):
        a.set("detection", "2.0.0")
    monkeypatch.undo()
    assert ActiveVersions(str(path), {"detection": "1.0.0"}).version("detection") == "1.1.0"
    assert not list(tmp_path.glob(".tmp-*")), "temporary file left behind"


def test_binary_garbage_state_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "active.yaml"
    path.write_bytes(b"\x80\x81\xfe\xff" * 10)
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    assert a.version("detection") == "1.0.0" and "unreadable" in a.warning
