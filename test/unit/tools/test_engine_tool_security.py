"""engine_tool keygen / sign / audit as an operator uses them."""

from __future__ import annotations

import os
import shutil

import pytest

from airside_perception.engines import audit, signing
from airside_perception.tools import engine_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


def test_keygen_sign_and_verify(tmp_path, capsys):
    engines = tmp_path / "engines"
    shutil.copytree(os.path.join(ROOT, "occupancy", "1.1.0"), engines / "occupancy" / "1.1.0")
    assert engine_tool.main(["keygen", "--out-dir", str(tmp_path / "keys"), "--name", "release"]) == 0
    assert engine_tool.main(["sign", "--task", "occupancy", "--version", "1.1.0", "--key",
                             str(tmp_path / "keys" / "release.key"), "--engines-dir", str(engines)]) == 0
    out = capsys.readouterr().out
    assert "signed with key" in out and "model.onnx" in out
    trusted = signing.load_trusted_keys(str(tmp_path / "keys"))
    assert signing.verify_version(str(engines / "occupancy" / "1.1.0"), "occupancy", "1.1.0", trusted).key_id \
        in trusted


def test_sign_with_a_missing_key_is_one_line_exit_2(tmp_path, capsys):
    engines = tmp_path / "engines"
    shutil.copytree(os.path.join(ROOT, "occupancy", "1.1.0"), engines / "occupancy" / "1.1.0")
    with pytest.raises(SystemExit) as exit_info:
        engine_tool.main(["sign", "--task", "occupancy", "--version", "1.1.0", "--key", str(tmp_path / "no.key"),
                          "--engines-dir", str(engines)])
    assert exit_info.value.code == 2
    assert "not a readable PEM private key" in capsys.readouterr().err


def test_audit_prints_the_log_as_a_table(tmp_path, capsys):
    path = tmp_path / audit.AUDIT_FILE
    log = audit.AuditLog(str(path))
    log.append("swap", "detection", "refused", reason="signature check failed", caller="/ota_agent")
    log.append("rollback", "detection", "accepted", caller="/ota_agent")
    assert engine_tool.main(["audit", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert "signature check failed" in out and out.count("/ota_agent") == 2 and "2 entries" in out
