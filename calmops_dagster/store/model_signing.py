"""Manifest signatures: a model version is believed only when signed with a key kept outside CALMOPS_HOME.

A sha256 in ``manifest.json`` proves a model file whole, but only against a hash stored where an attacker
cannot write: whoever can write the model store can write a manifest that vouches for any file. So every
manifest is signed, HMAC-SHA256 over its canonical JSON (sorted keys, no spaces, ASCII, the ``signature``
field left out), with a key that does not live in the home it protects:

- ``CALMOPS_MODEL_KEY``: the key itself (any text, at least 32 characters), or
- ``CALMOPS_MODEL_KEY_FILE``: a file outside ``CALMOPS_HOME`` holding it (a file inside the home is refused).

With a key, every load verifies the signature before any other byte is read and refuses unsigned and
mis-signed versions. Without one, manifests are neither signed nor verified (the hash still guards against
corruption) and ``calmops serve``/``calmops dev`` warn at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from calmops_dagster.errors import ModelIntegrityError, ModelKeyError

MODEL_KEY_ENV = "CALMOPS_MODEL_KEY"
MODEL_KEY_FILE_ENV = "CALMOPS_MODEL_KEY_FILE"
SIGNATURE_FIELD = "signature"
SIGNATURE_PREFIX = "hmac-sha256:"
MIN_KEY_LENGTH = 32

KEY_HOWTO = (
    "make a model signing key outside CALMOPS_HOME, e.g.\n"
    "  python -c 'import secrets; print(secrets.token_hex(32))' > ~/.calmops-model.key && "
    "chmod 600 ~/.calmops-model.key\n"
    f"  export {MODEL_KEY_FILE_ENV}=~/.calmops-model.key   (or {MODEL_KEY_ENV}=<the key itself>)\n"
    "then every model version is signed when it is saved and verified before it is loaded"
)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def model_key(forbidden: tuple[Path, ...] = ()) -> bytes | None:
    """The signing key from the environment, or ``None`` when none is set.

    A key file inside any of ``forbidden`` (the home it protects) is refused with :class:`ModelKeyError`:
    whoever can write the home could then replace the key along with the manifests.
    """
    inline, key_file = os.environ.get(MODEL_KEY_ENV), os.environ.get(MODEL_KEY_FILE_ENV)
    if inline and key_file:
        raise ModelKeyError(f"both ${MODEL_KEY_ENV} and ${MODEL_KEY_FILE_ENV} are set: set one")
    if key_file:
        path = Path(key_file).expanduser().resolve()
        for folder in forbidden:
            if _inside(path, Path(folder).expanduser().resolve()):
                raise ModelKeyError(f"${MODEL_KEY_FILE_ENV} {path} lies inside {folder}, the storage the key "
                                    "protects; keep it outside CALMOPS_HOME")
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ModelKeyError(f"${MODEL_KEY_FILE_ENV} {path}: cannot read the key: {exc}") from None
        source = str(path)
    elif inline:
        text, source = inline.strip(), f"${MODEL_KEY_ENV}"
    else:
        return None
    if len(text) < MIN_KEY_LENGTH:
        raise ModelKeyError(f"{source}: the model key must be at least {MIN_KEY_LENGTH} characters")
    return text.encode()


def canonical_json(manifest: dict) -> bytes:
    """The bytes a signature covers: the manifest without its signature, keys sorted, no whitespace."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def signature(manifest: dict, key: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(key, canonical_json(manifest), hashlib.sha256).hexdigest()


def sign_manifest(manifest: dict, key: bytes | None) -> dict:
    """``manifest`` with its ``signature`` (unchanged without a key)."""
    if key is None:
        return manifest
    return {**manifest, SIGNATURE_FIELD: signature(manifest, key)}


def verify_manifest(manifest: dict, key: bytes | None, path: Path) -> dict:
    """``manifest`` when its signature matches ``key`` (or no key is set); :class:`ModelIntegrityError`
    naming ``path`` when it is unsigned or mis-signed."""
    if key is None:
        return manifest
    given = manifest.get(SIGNATURE_FIELD)
    if not isinstance(given, str) or not given:
        raise ModelIntegrityError(f"{path}: manifest is not signed, and a model signing key is set; refusing "
                                  "to load this version")
    try:
        expected = signature(manifest, key)
    except ValueError as exc:  # a NaN or infinity cannot be part of a signed manifest
        raise ModelIntegrityError(f"{path}: manifest cannot be verified: {exc}") from None
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ModelIntegrityError(f"{path}: manifest signature does not match the model signing key; "
                                  "refusing to load this version")
    return manifest
