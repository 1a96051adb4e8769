"""The trust check every door calls: bundled versions, signatures, revocation (core, no ROS)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from airside_perception.engines import signing, trust
from airside_perception.engines.trust import TrustPolicy, check

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


@pytest.fixture()
def root(tmp_path):
    """An engines root with the shipped detection 1.0.0 and 2.1.0, a fleet key trusted, one not."""
    r = tmp_path / "engines"
    for version in ("1.0.0", "2.1.0"):
        shutil.copytree(os.path.join(SHIPPED, "detection", version), r / "detection" / version)
    fleet = signing.generate_keypair(str(tmp_path / "keys"), "fleet")
    rogue = signing.generate_keypair(str(tmp_path / "keys"), "rogue")
    (tmp_path / "trusted").mkdir()
    shutil.copy(fleet["public"], tmp_path / "trusted")
    policy = TrustPolicy(True, str(tmp_path / "trusted"), str(tmp_path / "state" / trust.SEEN_FILE))
    return r, policy, fleet, rogue


def _copy(r, src, dst, relabel=True):
    shutil.copytree(r / "detection" / src, r / "detection" / dst)
    if relabel:
        m = r / "detection" / dst / "manifest.yaml"
        m.write_text(m.read_text().replace(f"version: {src}", f"version: {dst}"))
    return r / "detection" / dst


def _check(r, policy, version):
    return check(str(r / "detection" / version), "detection", version, str(r), policy)


def test_the_bundled_list_is_exactly_the_packages_versions_as_they_are():
    bundled = trust.bundled_versions()
    shipped = {f"{t}/{v}" for t in os.listdir(SHIPPED) for v in os.listdir(os.path.join(SHIPPED, t))}
    assert set(bundled) == shipped, "run 'engine_tool bundle' after adding or changing a shipped version"
    for key, digest in bundled.items():
        task, version = key.split("/")
        assert trust.content_digest(os.path.join(SHIPPED, task, version), task, version) == digest, key


def test_a_bundled_version_opens_without_keys_and_costs_milliseconds(root):
    r, _, _, _ = root
    v = _check(r, TrustPolicy(True, ""), "2.1.0")
    assert v.trusted and v.how == "bundled" and v.check_ms < 500


def test_an_unsigned_relabelled_copy_is_refused_naming_the_fix(root):
    r, policy, _, _ = root
    _copy(r, "2.1.0", "9.0.0")
    v = _check(r, policy, "9.0.0")
    assert not v.trusted and "not signed" in v.reason and "engine_tool sign" in v.reason
    v = _check(r, TrustPolicy(True, ""), "9.0.0")
    assert not v.trusted and "trusted_keys_dir" in v.reason


def test_a_bundled_version_edited_at_rest_is_no_longer_trusted(root):
    r, policy, _, _ = root
    m = r / "detection" / "2.1.0" / "manifest.yaml"
    text = m.read_text()
    assert "metrics:" in text
    m.write_text(text.replace("metrics:", "metrics:\n  edited: 1.0", 1))
    v = _check(r, policy, "2.1.0")
    assert not v.trusted and "not signed" in v.reason


def test_signed_by_the_fleet_key_opens_and_by_another_key_is_refused_naming_it(root):
    r, policy, fleet, rogue = root
    d = _copy(r, "2.1.0", "9.0.0")
    signing.sign_version(str(d), "detection", "9.0.0", rogue["private"])
    v = _check(r, policy, "9.0.0")
    assert not v.trusted and rogue["key_id"] in v.reason and v.key_id == rogue["key_id"]
    signing.sign_version(str(d), "detection", "9.0.0", fleet["private"])
    v = _check(r, policy, "9.0.0")
    assert v.trusted and v.how == "signed" and v.key_id == fleet["key_id"]


def test_with_signatures_off_anything_opens_but_a_revoked_version_still_does_not(root):
    r, policy, fleet, _ = root
    _copy(r, "2.1.0", "9.0.0")
    off = TrustPolicy(False, policy.trusted_keys_dir, policy.seen_path)
    assert _check(r, off, "9.0.0").how == "unchecked"
    trust.revoke(str(r), "detection", "9.0.0", fleet["private"], "bad release")
    v = _check(r, off, "9.0.0")
    assert not v.trusted and "revoked (bad release)" in v.reason


def test_a_revoked_signed_version_is_refused_and_removing_or_replacing_the_list_revokes_nothing_back(root):
    r, policy, fleet, rogue = root
    d = _copy(r, "2.1.0", "9.0.0")
    signing.sign_version(str(d), "detection", "9.0.0", fleet["private"])
    assert _check(r, policy, "9.0.0").trusted
    revoked = trust.revoke(str(r), "detection", "9.0.0", fleet["private"], "misses persons at night")
    assert "detection/9.0.0" in revoked
    assert "revoked" in _check(r, policy, "9.0.0").reason
    listed = r / trust.REVOKED_FILE
    saved = listed.read_text()
    listed.unlink()  # removed
    assert "revoked" in _check(r, policy, "9.0.0").reason
    body = json.loads(saved)
    body["statement"]["revoked"] = []  # replaced by a list without the entry, signed by the fleet key
    listed.write_text(json.dumps(signing.sign_statement(body["statement"], signing.load_private_key(fleet["private"]))))
    assert "revoked" in _check(r, policy, "9.0.0").reason
    listed.write_text(saved.replace("misses persons", "fine"))  # altered: its signature fails
    rev = trust.revocations(str(r), policy)
    assert "revocation list not taken" in rev.problem and "detection/9.0.0" in rev.revoked


def test_a_revocation_list_signed_by_an_untrusted_key_is_not_taken(root, tmp_path):
    r, _, _, rogue = root
    fresh = TrustPolicy(True, root[1].trusted_keys_dir, str(tmp_path / "other" / trust.SEEN_FILE))
    trust.revoke(str(r), "detection", "2.1.0", rogue["private"])
    rev = trust.revocations(str(r), fresh)
    assert rev.revoked == {} and rogue["key_id"] in rev.problem
    assert _check(r, fresh, "2.1.0").trusted  # a stranger cannot take the fleet's engines away


def test_revoke_refuses_to_extend_a_list_another_key_signed(root):
    r, _, fleet, rogue = root
    trust.revoke(str(r), "detection", "1.0.0", fleet["private"])
    with pytest.raises(signing.SignatureError, match="not in trusted_keys_dir"):
        trust.revoke(str(r), "detection", "2.1.0", rogue["private"])


def test_check_never_raises_on_a_broken_directory(root):
    r, policy, _, _ = root
    (r / "detection" / "empty").mkdir()
    v = _check(r, policy, "empty")
    assert not v.trusted and v.reason
    v = check(str(r / "nowhere"), "detection", "nowhere", str(r), policy)
    assert not v.trusted and v.reason


def test_the_check_of_a_shipped_version_is_cheap():
    start = time.perf_counter()
    for _ in range(5):
        v = check(os.path.join(SHIPPED, "segmentation", "2.2.0"), "segmentation", "2.2.0", SHIPPED, TrustPolicy())
    assert v.trusted and (time.perf_counter() - start) / 5 < 1.0


def test_a_version_past_its_signed_not_after_is_refused_at_every_door_and_the_date_is_signed(root, capsys):
    from airside_perception.tools import engine_tool

    r, policy, fleet, _ = root
    _copy(r, "2.1.0", "2.1.1")
    assert engine_tool.main(["sign", "--task", "detection", "--version", "2.1.1", "--key", fleet["private"],
                             "--engines-dir", str(r), "--not-after", "2000-01-01"]) == 0
    manifest = (r / "detection" / "2.1.1" / "manifest.yaml").read_text()
    assert "not_after: 2000-01-01" in manifest
    v = _check(r, policy, "2.1.1")
    assert not v.trusted and "expired" in v.reason and "2000-01-01" in v.reason, v.reason
    # with signatures off too: the date is the signer's word, not a signature matter
    assert not _check(r, TrustPolicy(False), "2.1.1").trusted
    # a later date opens; editing the date at rest breaks the signature
    assert engine_tool.main(["sign", "--task", "detection", "--version", "2.1.1", "--key", fleet["private"],
                             "--engines-dir", str(r), "--not-after", "2999-12-31"]) == 0
    assert _check(r, policy, "2.1.1").trusted
    path = r / "detection" / "2.1.1" / "manifest.yaml"
    path.write_text(path.read_text().replace("2999-12-31", "2998-12-31"))
    assert not _check(r, policy, "2.1.1").trusted


def test_sign_refuses_a_not_after_that_is_no_date(root, capsys):
    from airside_perception.tools import engine_tool

    r, _, fleet, _ = root
    _copy(r, "2.1.0", "2.1.1")
    assert engine_tool.main(["sign", "--task", "detection", "--version", "2.1.1", "--key", fleet["private"],
                             "--engines-dir", str(r), "--not-after", "next year"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
