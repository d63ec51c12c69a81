"""The champion's drift reference, prepared once: a :class:`~calmops_dagster.drift.profile.ReferenceProfile`
per (reference sha256, profile settings and features), so the drift step of each block does not sort the
reference again.

A profile is kept in this process's memory (``calmops run`` processes a pipeline's blocks in one process) and
as a derived file beside the model, ``models/<version>/drift-profile-<fingerprint>.npz``, written atomically,
so forked run workers and later processes read it instead of building it. A file that is missing, stale (of
another reference) or unreadable is rebuilt and rewritten, with a one-line warning naming it for the last two.
The file is not in the version's manifest: it holds nothing that is not derived from the verified reference,
it is read with ``allow_pickle=False``, and with a model signing key it is signed and verified with it (a
file planted by whoever can write the store is refused like a stale one).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import pandas as pd

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.profile import (
    ProfileFileError,
    ProfileSettings,
    ReferenceProfile,
    settings_fingerprint,
)
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.storage import write_atomic

PROFILE_PREFIX = "drift-profile-"
#: Profiles this process keeps (each holds its reference's numeric columns sorted): a pipeline's champion and a
#: few others when ``calmops run`` goes through several pipelines.
MAX_PROFILES = 4
_PROFILES: OrderedDict[tuple[str, str], ReferenceProfile] = OrderedDict()
_LOCK = threading.Lock()


def champion_profile(store: ModelStore, version: str, manifest: dict, config: DriftConfig,
                     reference: Callable[[], pd.DataFrame], log) -> ReferenceProfile:
    """The profile of ``version``'s reference (``manifest["features"]`` only) under ``config``: from memory,
    from its file, or built from ``reference()`` (called only then) and written beside the model."""
    features = list(manifest["features"])
    sha = manifest.get("reference_sha256")
    if not isinstance(sha, str) or not sha:  # nothing to key it by: the reference read refuses such a version
        return ReferenceProfile.build(reference()[features], config)
    fingerprint = settings_fingerprint(ProfileSettings.of(config), features)
    key = (sha, fingerprint)
    with _LOCK:
        if key in _PROFILES:
            _PROFILES.move_to_end(key)
            return _PROFILES[key]
    path = store.folder(version) / f"{PROFILE_PREFIX}{fingerprint}.npz"
    profile = _read(path, sha, fingerprint, store.key, log)
    if profile is None:
        profile = ReferenceProfile.build(reference()[features], config, source=sha)
        try:
            write_atomic(path, profile.to_npz(store.key))
        except (ProfileFileError, OSError) as exc:
            log.warning(f"{path}: drift profile not written, each process prepares its own: {exc}")
    with _LOCK:
        _PROFILES[key] = profile
        while len(_PROFILES) > MAX_PROFILES:
            _PROFILES.popitem(last=False)
    return profile


def _read(path, sha: str, fingerprint: str, key: bytes | None, log) -> ReferenceProfile | None:
    """The profile in ``path`` when it is one of reference ``sha`` with ``fingerprint`` (signed with ``key``,
    the model signing key, when there is one); else None (warned unless the file is missing)."""
    try:
        profile = ReferenceProfile.from_npz(path.read_bytes(), key)
    except FileNotFoundError:
        return None
    except (ProfileFileError, OSError) as exc:
        log.warning(f"{path}: {exc}; preparing it again")
        return None
    if profile.source != sha or profile.fingerprint != fingerprint:
        log.warning(f"{path}: drift profile of another reference or settings; preparing it again")
        return None
    return profile
