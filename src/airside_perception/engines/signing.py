"""Signed engine versions: a detached Ed25519 signature over what a version is.

The signed statement binds the task, the version and the sha256 of the manifest and of
every file the manifest names (model, golden inputs), so that a signed version can be
neither altered (any byte of those files), nor replayed as another task, nor relabelled as
another version (its directory must be ``<root>/<task>/<version>``). Keys are Ed25519
through ``cryptography`` (no hand-written crypto): ``NAME.key`` (PKCS#8 PEM, mode 0600)
signs, ``NAME.pub`` (SubjectPublicKeyInfo PEM) verifies; a key's id is the first 16 hex
digits of the sha256 of its raw public bytes. Several trusted keys may be valid at once
(key rotation). Everything imports lazily: the vehicle needs ``cryptography`` only when
signatures are required.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import yaml

from airside_perception.engines.manifest import MANIFEST_NAME, sha256_of
from airside_perception.errors import AirsideError

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = 1


class SignatureError(AirsideError):
    """A version is unsigned, altered, signed by an untrusted key, or signed for something else."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SignatureError(f"signatures need the 'cryptography' package ({exc}): pip install cryptography") \
            from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: str, name: str) -> Dict[str, str]:
    """Writes ``out_dir/name.key`` (mode 0600) and ``out_dir/name.pub``; refuses to overwrite."""
    ed25519, serialization, _ = _crypto()
    if not name or os.path.basename(name) != name or name.startswith("."):
        raise SignatureError(f"key name '{name}' must be a plain file name (letters, digits, -, _)")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise SignatureError(f"--out-dir {out_dir} cannot be created ({exc.strerror}): pick a writable directory") \
            from None
    key_path, pub_path = os.path.join(out_dir, name + ".key"), os.path.join(out_dir, name + ".pub")
    for path in (key_path, pub_path):
        if os.path.exists(path):
            raise SignatureError(f"{path} exists: pick another --name or remove the old key first")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    with open(pub_path, "wb") as fh:
        fh.write(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"private": key_path, "public": pub_path, "key_id": key_id(private.public_key())}


def load_private_key(path: str):
    ed25519, serialization, _ = _crypto()
    try:
        with open(path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not a readable PEM private key ({exc}): use a .key from engine_tool keygen") \
            from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key: use a key from engine_tool keygen")
    return key


def load_trusted_keys(keys_dir: str) -> Dict[str, Any]:
    """``{key id: public key}`` of every ``*.pub`` in ``keys_dir``; a bad file is an error naming it."""
    ed25519, serialization, _ = _crypto()
    if not keys_dir or not os.path.isdir(keys_dir):
        raise SignatureError(f"trusted_keys_dir '{keys_dir}' is not a directory: set it to the directory of the "
                             "vehicle's trusted *.pub keys")
    keys = {}
    for path in sorted(glob.glob(os.path.join(keys_dir, "*.pub"))):
        try:
            with open(path, "rb") as fh:
                key = serialization.load_pem_public_key(fh.read())
        except (OSError, ValueError) as exc:
            raise SignatureError(f"trusted key {path} cannot be read ({exc}): replace it with a .pub from "
                                 "engine_tool keygen") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SignatureError(f"trusted key {path} is not Ed25519")
        keys[key_id(key)] = key
    if not keys:
        raise SignatureError(f"trusted_keys_dir {keys_dir} holds no *.pub key: copy the release key's .pub there")
    return keys


def _named_files(version_dir: str) -> List[str]:
    """The manifest and every file it names, relative to the version directory."""
    path = os.path.join(version_dir, MANIFEST_NAME)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SignatureError(f"{path} cannot be read ({exc})") from None
    names = [MANIFEST_NAME]
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and isinstance(model.get("file"), str):
        names.append(model["file"])
    validation = data.get("validation") if isinstance(data, dict) else None
    if isinstance(validation, dict) and isinstance(validation.get("golden_inputs"), str):
        names.append(validation["golden_inputs"])
    for name in names:
        if os.path.basename(name) != name:
            raise SignatureError(f"{path} names '{name}' outside its directory")
    return names


def statement(version_dir: str, task: str, version: str) -> Dict[str, Any]:
    """What a signature vouches for: task, version and the sha256 of each named file."""
    files = {}
    for name in _named_files(version_dir):
        full = os.path.join(version_dir, name)
        if not os.path.isfile(full):
            raise SignatureError(f"{full} is missing: the version directory is incomplete")
        files[name] = sha256_of(full)
    return {"format": SIGNATURE_FORMAT, "task": task, "version": version, "files": files}


def _canonical(data: Dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign_version(version_dir: str, task: str, version: str, private_key_path: str) -> Dict[str, Any]:
    """Writes ``version_dir/signature.json``; returns it."""
    key = load_private_key(private_key_path)
    signed = sign_statement(statement(version_dir, task, version), key)
    with open(os.path.join(version_dir, SIGNATURE_FILE), "w") as fh:
        json.dump(signed, fh, indent=2)
    return signed


def sign_statement(body: Dict[str, Any], private_key) -> Dict[str, Any]:
    """``{statement, key_id, signature}``: ``body`` signed by an Ed25519 private key."""
    return {"statement": body, "key_id": key_id(private_key.public_key()),
            "signature": base64.b64encode(private_key.sign(_canonical(body))).decode()}


def verify_statement(body: Dict[str, Any], signed: Dict[str, Any], trusted: Dict[str, Any], path: str,
                     subject: Optional[str] = None, altered: str = "file", resign: str = "it") -> str:
    """Checks ``signed``'s signature over ``body`` against the ``trusted`` keys; returns the key id
    (``SignatureError`` names the unknown key or the altered file). ``subject`` names what was
    signed in the messages (default ``path``)."""
    _, _, invalid = _crypto()
    try:
        kid, sig = str(signed["key_id"]), base64.b64decode(signed["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{path} is malformed ({type(exc).__name__}): sign {resign} again") from None
    key = trusted.get(kid)
    if key is None:
        raise SignatureError(f"{subject or path} is signed by key {kid}, which is not in trusted_keys_dir "
                             f"(trusted: {sorted(trusted)}): sign with a trusted key or add its .pub")
    try:
        key.verify(sig, _canonical(body))
    except invalid:
        raise SignatureError(f"{path}: the signature does not match its statement under key {kid}: the "
                             f"{altered} was altered") from None
    return kid


@dataclass(frozen=True)
class Verified:
    key_id: str
    files: Dict[str, str]


def verify_version(version_dir: str, task: str, version: str, trusted: Dict[str, Any]) -> Verified:
    """Checks ``version_dir``'s signature against ``trusted`` keys; ``SignatureError`` names what failed:
    the missing signature, the unknown key, the file whose bytes changed, or the task/version it was
    signed for."""
    path = os.path.join(version_dir, SIGNATURE_FILE)
    if not os.path.isfile(path):
        raise SignatureError(f"{task} {version} is not signed ({path} missing): sign it with "
                             f"'engine_tool sign --task {task} --version {version} --key KEY.key'")
    try:
        with open(path) as fh:
            signed = json.load(fh)
        body = signed["statement"]
        files = dict(body["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{path} is malformed ({type(exc).__name__}): sign the version again") from None
    kid = verify_statement(body, signed, trusted, path, subject=f"{task} {version}", altered="signature file",
                           resign="the version")
    if body.get("task") != task or str(body.get("version")) != version:
        raise SignatureError(f"{version_dir} is signed as {body.get('task')} {body.get('version')}, not {task} "
                             f"{version}: a signed version cannot be reused as another task or version")
    if MANIFEST_NAME not in files:
        raise SignatureError(f"{path} does not cover {MANIFEST_NAME}: sign the version again")
    # The manifest first, byte for byte: it names the other files, so once it matches, the set of
    # files it names is the signed one.
    for name in [MANIFEST_NAME] + sorted(n for n in files if n != MANIFEST_NAME):
        full = os.path.join(version_dir, name)
        if os.path.basename(name) != name:
            raise SignatureError(f"{path} names '{name}' outside the version directory")
        actual = sha256_of(full) if os.path.isfile(full) else "missing"
        if actual != files[name]:
            what = "is missing" if actual == "missing" else "changed since it was signed"
            raise SignatureError(f"{full} {what} (key {kid}): the version was tampered with or edited after "
                                 "signing; re-copy it or sign it again")
    return Verified(kid, files)


def signature_key_id(version_dir: str) -> Optional[str]:
    """The key id a version claims to be signed with (for the audit log), or None."""
    try:
        with open(os.path.join(version_dir, SIGNATURE_FILE)) as fh:
            return str(json.load(fh)["key_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
