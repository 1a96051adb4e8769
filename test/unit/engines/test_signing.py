"""Signed engine versions and the audit log (core, no ROS)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from airside_perception.engines import audit, signing
from airside_perception.engines.trust import TrustPolicy
from airside_perception.errors import SwapError
from airside_perception.ota import staging
from airside_perception.pipelines import store

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


@pytest.fixture()
def engines(tmp_path):
    """An engines root with detection 1.0.0 and a copy 1.0.1, and two release keys."""
    root = tmp_path / "engines"
    for version in ("1.0.0", "1.0.1"):
        shutil.copytree(os.path.join(ROOT, "detection", "1.0.0"), root / "detection" / version,
                        ignore=shutil.ignore_patterns("gate_report*", "signature.json"))
        manifest = root / "detection" / version / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    (root / "segmentation").mkdir()
    keys = tmp_path / "keys"
    old = signing.generate_keypair(str(keys), "release-2025")
    new = signing.generate_keypair(str(keys), "release-2026")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    for k in (old, new):
        shutil.copy(k["public"], trusted)
    return root, keys, trusted, old, new


def _stage(root, trusted, version="1.0.1", task="detection"):
    serving = store.load_version(str(root), "detection", "1.0.0")
    return staging.stage(str(root), task, str(root / task / version), serving, False,
                         trust=TrustPolicy(True, str(trusted)))


def test_keygen_writes_a_private_key_only_its_owner_reads(engines):
    _, keys, _, old, _ = engines
    assert stat.S_IMODE(os.stat(old["private"]).st_mode) == 0o600
    assert len(old["key_id"]) == 16
    with pytest.raises(signing.SignatureError, match="exists"):
        signing.generate_keypair(str(keys), "release-2025")


def test_signed_version_swaps_in_with_either_trusted_key(engines):
    root, _, trusted, old, new = engines
    signing.sign_version(str(root / "detection" / "1.0.1"), "detection", "1.0.1", old["private"])
    assert _stage(root, trusted).version == "1.0.1"
    signing.sign_version(str(root / "detection" / "1.0.1"), "detection", "1.0.1", new["private"])  # rotation
    assert _stage(root, trusted).version == "1.0.1"


def test_unsigned_version_is_refused_with_the_command_to_sign_it(engines):
    root, _, trusted, _, _ = engines
    with pytest.raises(SwapError, match="not signed.*engine_tool sign"):
        _stage(root, trusted)


@pytest.mark.parametrize("victim", ["model.onnx", "manifest.yaml", "golden.npz"])
def test_any_changed_byte_is_refused_naming_the_file(engines, victim):
    root, _, trusted, old, _ = engines
    version_dir = root / "detection" / "1.0.1"
    signing.sign_version(str(version_dir), "detection", "1.0.1", old["private"])
    path = version_dir / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SwapError, match=f"{victim} changed since it was signed"):
        _stage(root, trusted)


def test_key_outside_the_trusted_directory_is_refused_naming_it(engines, tmp_path):
    root, _, trusted, _, _ = engines
    rogue = signing.generate_keypair(str(tmp_path / "rogue"), "attacker")
    signing.sign_version(str(root / "detection" / "1.0.1"), "detection", "1.0.1", rogue["private"])
    with pytest.raises(SwapError, match=f"key {rogue['key_id']}, which is not in trusted_keys_dir"):
        _stage(root, trusted)


def test_forged_signature_bytes_are_refused(engines):
    root, _, trusted, old, _ = engines
    sig_path = root / "detection" / "1.0.1" / signing.SIGNATURE_FILE
    signing.sign_version(str(sig_path.parent), "detection", "1.0.1", old["private"])
    signed = json.loads(sig_path.read_text())
    signed["statement"]["files"]["model.onnx"] = "0" * 64
    sig_path.write_text(json.dumps(signed))
    with pytest.raises(SwapError, match="does not match its statement"):
        _stage(root, trusted)


def test_signed_version_cannot_be_relabelled_as_a_newer_version(engines):
    root, _, trusted, old, _ = engines
    signing.sign_version(str(root / "detection" / "1.0.1"), "detection", "1.0.1", old["private"])
    shutil.copytree(root / "detection" / "1.0.1", root / "detection" / "9.9.9")
    with pytest.raises(SwapError, match="signed as detection 1.0.1, not detection 9.9.9"):
        _stage(root, trusted, version="9.9.9")


def test_signed_version_cannot_be_replayed_as_another_task(engines):
    root, _, trusted, old, _ = engines
    signing.sign_version(str(root / "detection" / "1.0.1"), "detection", "1.0.1", old["private"])
    shutil.copytree(root / "detection" / "1.0.1", root / "segmentation" / "1.0.1")
    with pytest.raises(SwapError, match="signed as detection 1.0.1, not segmentation 1.0.1"):
        staging.stage(str(root), "segmentation", str(root / "segmentation" / "1.0.1"),
                      store.load_version(str(root), "detection", "1.0.0"), False,
                      trust=TrustPolicy(True, str(trusted)))


def test_empty_or_missing_trusted_directory_names_the_fix(tmp_path):
    with pytest.raises(signing.SignatureError, match="is not a directory"):
        signing.load_trusted_keys(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(signing.SignatureError, match="holds no"):
        signing.load_trusted_keys(str(tmp_path / "empty"))


def test_audit_log_appends_whole_lines_and_rotates(tmp_path):
    log = audit.AuditLog(str(tmp_path / "state" / audit.AUDIT_FILE), max_bytes=600, keep=2)
    for k in range(12):
        log.append("swap", "detection", "refused" if k % 2 else "accepted", reason=f"reason {k}",
                   caller="/operator", path="/engines/detection/1.0.1", version="1.0.1", key_id="ab" * 8,
                   duration_ms=12.5)
    entries = list(audit.read_entries(log.path))
    assert [e["reason"] for e in entries] == [f"reason {k}" for k in range(12 - len(entries), 12)]
    assert os.path.exists(log.path + ".1") and not os.path.exists(log.path + ".3")
    assert set(audit.FIELDS) <= set(entries[-1])
    text = audit.table(entries)
    assert "/operator" in text and "refused" in text and len(text.splitlines()) == len(entries) + 1


def test_audit_reader_skips_a_torn_line(tmp_path):
    path = tmp_path / audit.AUDIT_FILE
    audit.AuditLog(str(path)).append("rollback", "occupancy", "accepted")
    with open(path, "a") as fh:
        fh.write('{"time": "2026-')
    assert [e["action"] for e in audit.read_entries(str(path))] == ["rollback"]
