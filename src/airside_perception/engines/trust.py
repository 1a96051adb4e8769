"""Whether a version may be opened: the one check that every door calls (the model manager's
swap, the host's load service, rollbacks, the versions a host starts with, shadow runs).

A version is trusted when it is not revoked, its manifest's ``not_after`` date (if the signer set
one) has not passed, and, with signatures required, either

- **bundled**: its content (the manifest and every file it names) is byte for byte a version
  shipped with the package, listed with its content digest in ``bundled_versions.json`` beside
  this module (part of the installed code, not of the engines directory it vouches for); or
- **signed** by a key in ``trusted_keys_dir`` (``signing.verify_version``).

**Revocation.** ``<engines_root>/revoked.json`` lists withdrawn versions, signed by a trusted
key (``engine_tool revoke``). Revocation is permanent: every process that checks remembers every
entry of every list it has verified (``seen_path``, beside the state file), so removing the list,
putting back an older one, or a newer one that leaves an entry out un-revokes nothing; a list
that fails its signature check is ignored and reported, the remembered entries still hold. To
serve a revoked model again, ship it under a new version number.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import yaml

from airside_perception.engines import signing
from airside_perception.engines.active import write_atomic
from airside_perception.engines.manifest import MANIFEST_NAME, expiry_problem, parse_not_after
from airside_perception.errors import AirsideError

BUNDLED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled_versions.json")
REVOKED_FILE = "revoked.json"
SEEN_FILE = "revoked_seen.json"
REVOCATION_FORMAT = 1


@dataclass(frozen=True)
class TrustPolicy:
    """require_signature: False only for development (every door then accepts unsigned and altered
    versions; revocations verified by a trusted key still hold); trusted_keys_dir: the ``*.pub``
    keys a non-bundled version may be signed with, and a revocation list must be signed with ("" :
    none, so only bundled versions open and no list is taken); seen_path: where this process
    remembers the revocations it has verified ("" : not remembered)."""

    require_signature: bool = True
    trusted_keys_dir: str = ""
    seen_path: str = ""


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    how: str  # "bundled", "signed", "unchecked" (signatures off), or "" when refused
    key_id: str
    reason: str  # why it was refused, "" when trusted
    check_ms: float


@dataclass(frozen=True)
class Revocations:
    revoked: Dict[str, str]  # "task/version" -> reason
    problem: str  # why the list in the engines root was not taken, "" when it was (or there is none)


def content_digest(version_dir: str, task: str, version: str) -> str:
    """sha256 over the manifest and every file it names, with their names (``SignatureError`` when
    one is missing or the manifest cannot be read)."""
    files = signing.statement(version_dir, task, version)["files"]
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def bundled_versions(path: str = BUNDLED_FILE) -> Dict[str, str]:
    """"task/version" -> content digest of the versions shipped with the package."""
    try:
        with open(path) as fh:
            return {str(k): str(v) for k, v in json.load(fh)["versions"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_bundled(engines_root: str, path: str = BUNDLED_FILE) -> Dict[str, str]:
    """Lists every version under ``engines_root`` with its digest (run when a version is shipped)."""
    versions = {}
    for task in sorted(os.listdir(engines_root)):
        task_dir = os.path.join(engines_root, task)
        if not os.path.isdir(task_dir):
            continue
        for version in sorted(os.listdir(task_dir)):
            version_dir = os.path.join(task_dir, version)
            if os.path.isfile(os.path.join(version_dir, "manifest.yaml")):
                versions[f"{task}/{version}"] = content_digest(version_dir, task, version)
    write_atomic(path, json.dumps({"format": 1, "versions": versions}, indent=1, sort_keys=True) + "\n")
    os.chmod(path, 0o644)
    return versions


# ---------------------------------------------------------------------------- revocation
def _trusted_keys(policy: TrustPolicy) -> Tuple[Dict, str]:
    if not policy.trusted_keys_dir:
        return {}, "no trusted_keys_dir is set"
    try:
        return signing.load_trusted_keys(policy.trusted_keys_dir), ""
    except AirsideError as exc:
        return {}, str(exc)


def _remembered(seen_path: str) -> Dict[str, str]:
    try:
        with open(seen_path) as fh:
            return {str(k): str(v) for k, v in json.load(fh)["revoked"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def read_revocation_list(engines_root: str, trusted: Dict) -> Dict[str, str]:
    """The verified entries of ``<engines_root>/revoked.json`` ({} when there is none);
    ``SignatureError`` when it is malformed or not signed by a trusted key."""
    path = os.path.join(engines_root, REVOKED_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            signed = json.load(fh)
        body = signed["statement"]
        entries = {f"{e['task']}/{e['version']}": str(e.get("reason", "")) for e in body["revoked"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise signing.SignatureError(f"{path} is malformed ({type(exc).__name__}): write it again with "
                                     "'engine_tool revoke'") from None
    signing.verify_statement(body, signed, trusted, path)
    return entries


def revocations(engines_root: str, policy: TrustPolicy) -> Revocations:
    """Every revoked version: the verified list in the engines root and everything remembered."""
    revoked = _remembered(policy.seen_path) if policy.seen_path else {}
    trusted, why_none = _trusted_keys(policy)
    problem = ""
    try:
        if os.path.exists(os.path.join(engines_root, REVOKED_FILE)) and not trusted:
            raise signing.SignatureError(f"{os.path.join(engines_root, REVOKED_FILE)} cannot be verified: {why_none}")
        listed = read_revocation_list(engines_root, trusted)
    except signing.SignatureError as exc:
        listed, problem = {}, f"revocation list not taken: {exc}"
    new = {k: v for k, v in listed.items() if k not in revoked}
    revoked.update(listed)
    if new and policy.seen_path:
        try:
            write_atomic(policy.seen_path, json.dumps({"revoked": revoked}, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            problem = problem or f"revocations cannot be remembered in {policy.seen_path}: {exc}"
    return Revocations(revoked, problem)


def revoke(engines_root: str, task: str, version: str, private_key_path: str, reason: str = "") -> Dict[str, str]:
    """Adds ``task/version`` to the engines root's revocation list and signs the list with the
    key; entries of the current list are kept (the current list must verify under this key's
    public half, or be absent). Returns every revoked version."""
    key = signing.load_private_key(private_key_path)
    public = {signing.key_id(key.public_key()): key.public_key()}
    path = os.path.join(engines_root, REVOKED_FILE)
    entries: List[dict] = []
    if os.path.exists(path):
        read_revocation_list(engines_root, public)  # refuses to extend a list this key did not sign
        with open(path) as fh:
            entries = list(json.load(fh)["statement"]["revoked"])
    if not any(e["task"] == task and e["version"] == version for e in entries):
        entries.append({"task": task, "version": version, "reason": reason,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    body = {"format": REVOCATION_FORMAT, "revoked": entries}
    write_atomic(path, json.dumps(signing.sign_statement(body, key), indent=2) + "\n")
    os.chmod(path, 0o644)
    return {f"{e['task']}/{e['version']}": e.get("reason", "") for e in entries}


# ---------------------------------------------------------------------------- the check
def _is_bundled(version_dir: str, task: str, version: str) -> bool:
    listed = bundled_versions().get(f"{task}/{version}")
    if listed is None:
        return False
    try:
        return content_digest(version_dir, task, version) == listed
    except signing.SignatureError:  # incomplete or unreadable: not the shipped bytes
        return False


def _expiry(version_dir: str) -> str:
    """Why the version's ``not_after`` has passed ('' when it has not, or it sets none). A manifest
    that cannot be read says nothing here: the signature and manifest checks name that problem."""
    try:
        with open(os.path.join(version_dir, MANIFEST_NAME)) as fh:
            data = yaml.safe_load(fh)
        return expiry_problem(parse_not_after(data.get("not_after") if isinstance(data, dict) else None))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return ""


def check(version_dir: str, task: str, version: str, engines_root: str, policy: TrustPolicy,
          revoked: Optional[Revocations] = None) -> Verdict:
    """May ``version_dir`` (``task`` ``version``) be opened under ``policy``? Never raises."""
    start = time.perf_counter()

    def verdict(trusted: bool, how: str, key_id: str = "", reason: str = "") -> Verdict:
        return Verdict(trusted, how, key_id, reason, (time.perf_counter() - start) * 1e3)

    try:
        revoked = revoked or revocations(engines_root, policy)
        key = f"{task}/{version}"
        if key in revoked.revoked:
            why = revoked.revoked[key]
            return verdict(False, "", "", f"{task} {version} is revoked" + (f" ({why})" if why else "")
                           + ": revoked versions never open again; ship the fix under a new version")
        expired = _expiry(version_dir)
        if expired:
            return verdict(False, "", signing.signature_key_id(version_dir) or "", f"{task} {version} {expired}")
        if not policy.require_signature:
            return verdict(True, "unchecked", signing.signature_key_id(version_dir) or "")
        if _is_bundled(version_dir, task, version):
            return verdict(True, "bundled")
        trusted, why_none = _trusted_keys(policy)
        if not trusted:
            claimed = signing.signature_key_id(version_dir)
            return verdict(False, "", claimed or "", f"{task} {version} is not a version shipped with the package "
                           f"and {why_none}: sign it with a fleet key and put that key's .pub in trusted_keys_dir")
        return verdict(True, "signed", signing.verify_version(version_dir, task, version, trusted).key_id)
    except AirsideError as exc:
        return verdict(False, "", signing.signature_key_id(version_dir) or "", str(exc))
    except Exception as exc:  # a door must get a reason, never an exception
        return verdict(False, "", "", f"trust check failed: {type(exc).__name__}: {exc}")
