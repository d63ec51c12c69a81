"""Versioned model files, each vouched for by a hash manifest, and the champion pointer.

A version appears whole or not at all and is never deleted (so a champion can be rolled back), and no byte
of a model is deserialized before its manifest's signature, path and hash check out. Loading and trust:
docs/models.md; the layout and how a version is published, locally and in S3: docs/layout.md, docs/storage.md.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import os
import pickle
import platform
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from calmops_dagster.errors import ModelIntegrityError, ModelVersionError
from calmops_dagster.store.model_signing import model_key, sign_manifest, verify_manifest
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.skops_io import skops_io
from calmops_dagster.store.storage import Location, StoragePath, create_exclusive, update_atomically

if TYPE_CHECKING:  # pandas and skops are imported where models and frames are read or written, so that
    import pandas as pd  # reading the champion pointer (``calmops list``) stays cheap


MANIFEST = "manifest.json"
CHAMPION_POINTER = "champion.json"
REFERENCE = "reference.parquet"
#: A model version's name: ``v`` and four or more digits, one folder directly in the pipeline's ``models/``.
VERSION_NAME = re.compile(r"v[0-9]{4,}")
STAGING_PREFIX = ".staging-"
_STAGING_OWNER = re.compile(r"\.staging-(\d+)@(.+)-[^-]*")  # pid and host of the process assembling it
#: A staging folder older than this is stale whoever made it: a publish takes seconds.
STALE_STAGING_SECONDS = 3600
CLAIM = ".claim"  # object storage: marks a version number as taken by one writer (see the module docstring)
_SKOPS_MAGIC = b"PK\x03\x04"  # a skops file is a zip archive
_PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol 2+ starts with PROTO (0x80) and the protocol number
PICKLE_REFUSED = ("a pickle runs code when loaded: set trust_pickle: true in the pipeline spec to load it "
                  "(river models need it), or keep to models skops can store")
_LIBRARIES = ("scikit-learn", "lightgbm", "river", "numpy", "pandas", "skops")
#: Types a skops file may hold beyond skops' own defaults (builtins, numpy arrays and dtypes, scikit-learn's
#: estimators). Each is a named class whose state is plain data: loading it runs no code of the file's
#: choosing. Anything else (``builtins.eval``, ``os.system``, an unknown class...) is refused even when the
#: hash matches. Add a type here only after checking it, with a test saving and loading a model that holds it.
TRUSTED_TYPES = frozenset({
    # scikit-learn internals that skops 0.16 does not trust by itself
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    # LightGBM (tested-versions.md)
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "collections.OrderedDict",
    # this project's estimators
    "calmops_dagster.ipip.IPIPClassifier",  # its documented path, as older skops files name it
    "calmops_dagster.learning.ipip.IPIPClassifier",
    "calmops_dagster.learning.retrain_modes.StackedModel",
    "calmops_dagster.learning.testing_models.ControlledTree",
})


def untrusted_types(data: bytes) -> list[str]:
    """The types in a skops file's bytes outside skops' defaults and :data:`TRUSTED_TYPES` (empty: safe)."""
    sio = skops_io()

    return sorted(t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES)


def load_skops(data: bytes, name):
    """Load a skops file's bytes (``name`` for messages) whose every type is trusted; skops itself enforces
    the allow-list while loading."""
    sio = skops_io()

    refused = untrusted_types(data)
    if refused:
        raise ModelIntegrityError(f"{name}: holds types outside the allow-list: {refused}; refusing to load it")
    return sio.loads(data, trusted=sorted(TRUSTED_TYPES))


def file_sha256(path: str | os.PathLike | StoragePath) -> str:
    return hashlib.sha256((path if isinstance(path, StoragePath) else Path(path)).read_bytes()).hexdigest()


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _serialize(model) -> tuple[str, bytes]:
    """skops bytes when skops can store the model with allow-listed types only, else pickle bytes (guarded
    by the manifest hash): river models (their state holds ``random.Random``, ``functools.partial``...) and
    models of packages a spec opted into with ``allow_any_module``."""
    sio = skops_io()

    try:
        blob = sio.dumps(model)
    except Exception:  # noqa: BLE001 -- skops refuses objects it cannot represent safely
        blob = None
    if blob is not None and set(sio.get_untrusted_types(data=blob)) <= TRUSTED_TYPES:
        return "skops", blob
    return "pickle", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def storage_refusal(model, trust_pickle: bool) -> str | None:
    """Why the store cannot keep ``model`` in a format this pipeline loads back, or ``None``: skops within
    :data:`TRUSTED_TYPES` always does; pickle (what the store writes for anything else) only with
    ``trust_pickle``; an object pickle cannot write never does."""
    try:
        fmt, _ = _serialize(model)
    except Exception as exc:  # noqa: BLE001 -- skops refused it, and so did pickle
        return f"an object the model store cannot serialize (neither skops nor pickle: {type(exc).__name__}: {exc})"
    if fmt == "pickle" and not trust_pickle:
        try:
            held = sorted(set(skops_io().get_untrusted_types(data=skops_io().dumps(model))) - TRUSTED_TYPES)
        except Exception:  # noqa: BLE001 -- skops cannot represent it at all
            held = ["(not storable by skops)"]
        return (f"a model skops cannot store within the allow-list (it holds {held}): it would be a pickle, "
                "which this pipeline does not load without trust_pickle: true")
    return None


def now_utc() -> str:
    """The current UTC time in ISO format, to the microsecond: blocks processed within one second must
    still sort in the order they were processed (``ORDER BY computed_at``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def sniff_format(data: bytes, name) -> str:
    """``skops`` or ``pickle`` from a file's first bytes; :class:`ModelIntegrityError` for anything else."""
    head = data[:4]
    if head == _SKOPS_MAGIC:
        return "skops"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return "pickle"
    raise ModelIntegrityError(f"{name}: neither a skops file nor a pickle (first bytes {head!r}); refusing it")


def _manifest(fmt: str, blob: bytes, reference: bytes, facts: dict) -> dict:
    """A version's manifest (unsigned, without its version name): files, their sha256, libraries, ``facts``."""
    return {
        "format": fmt,
        "model_file": f"model.{fmt}",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "reference_file": REFERENCE,
        "reference_sha256": hashlib.sha256(reference).hexdigest(),
        "created_at": now_utc(),
        "libraries": _library_versions(),
        **facts,
    }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def staging_is_stale(path: Path, now: float | None = None) -> bool:
    """Whether the staging folder ``path`` is left over: older than :data:`STALE_STAGING_SECONDS`, or made
    by a process of this host that is gone."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:  # published or removed meanwhile
        return False
    if age > STALE_STAGING_SECONDS:
        return True
    owner = _STAGING_OWNER.fullmatch(path.name)
    return owner is not None and owner[2] == socket.gethostname() and not _process_alive(int(owner[1]))


def is_version_name(name) -> bool:
    return isinstance(name, str) and VERSION_NAME.fullmatch(name) is not None


def _number(version: str) -> int:
    return int(version[1:])


_KEY_FROM_ENV = object()


class ModelStore:
    """The model versions and champion pointer of one pipeline.

    ``key`` signs every manifest written and verifies every manifest loaded; by default it is read from the
    environment (:func:`calmops_dagster.store.model_signing.model_key`), refusing a key file inside this
    store or inside ``$CALMOPS_HOME``.
    """

    def __init__(self, models_dir: str | os.PathLike | StoragePath, key: bytes | None | object = _KEY_FROM_ENV):
        self.root = models_dir if isinstance(models_dir, StoragePath) else Path(models_dir)
        self._key = key
        self._manifests: dict[str, dict] = {}  # a manifest is written once, last, and never changed

    @property
    def pipeline(self) -> str:
        """The pipeline these models belong to: the folder ``models/`` sits in (``pipelines/<name>/models``)."""
        return self.root.parent.name

    @property
    def key(self) -> bytes | None:
        if self._key is _KEY_FROM_ENV:
            # a key file is local: it can only lie inside a local store (an object store holds no key files)
            local = [p for p in (self.root, CalmOpsHome.from_env().root) if isinstance(p, Path)]
            self._key = model_key(forbidden=tuple(local))
        return self._key

    # ---- versions -------------------------------------------------------------------------------
    def folder(self, version) -> Location:
        """The folder of ``version``, when ``version`` is a version name (:data:`VERSION_NAME`); else
        :class:`ModelVersionError`, before anything is read."""
        if not is_version_name(version):
            raise ModelVersionError(f"{version!r} is not a model version of pipeline '{self.pipeline}': a version "
                                    f"is 'v' and four or more digits (e.g. v0003), a folder of {self.root}")
        return self.root / version

    def versions(self) -> list[str]:
        """Every complete version, oldest first."""
        if isinstance(self.root, StoragePath):  # one listing: the manifests are what make versions exist
            found = {p.parent.name for p in self.root.glob(f"v[0-9][0-9][0-9][0-9]*/{MANIFEST}")}
        elif self.root.is_dir():
            found = {p.name for p in self.root.glob("v[0-9][0-9][0-9][0-9]*") if (p / MANIFEST).is_file()}
        else:
            found = set()
        return sorted((v for v in found if is_version_name(v)), key=_number)

    def save(self, model, reference: pd.DataFrame, **facts) -> str:
        """Store a fitted model and its training data as a new version; return the version name.

        ``facts`` (e.g. ``trained_on_blocks``, ``metrics``, ``features``, ``role``) go into the manifest; its
        ``version`` and ``pipeline`` are the store's (a ``pipeline`` fact must be :attr:`pipeline`).
        """
        if facts.get("pipeline", self.pipeline) != self.pipeline:
            raise ValueError(f"pipeline {facts['pipeline']!r}: this store holds the models of '{self.pipeline}'")
        fmt, blob = _serialize(model)
        buffer = io.BytesIO()
        reference.to_parquet(buffer, index=False)
        if isinstance(self.root, StoragePath):
            return self._publish_remote(fmt, blob, buffer.getvalue(), facts)
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_stale_staging()
        owner = f"{STAGING_PREFIX}{os.getpid()}@{socket.gethostname()}-"
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=owner))
        try:
            model_file = staging / f"model.{fmt}"
            model_file.write_bytes(blob)
            (staging / REFERENCE).write_bytes(buffer.getvalue())
            return self._publish(staging, _manifest(fmt, blob, buffer.getvalue(), facts))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove_stale_staging(self) -> list[str]:
        """Remove the staging folders publishes that did not finish left behind (:func:`staging_is_stale`);
        return their names. A publish in progress is left alone."""
        if not isinstance(self.root, Path) or not self.root.is_dir():
            return []  # object storage has no staging folders
        removed = []
        for path in sorted(self.root.glob(f"{STAGING_PREFIX}*")):
            if staging_is_stale(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def _sign(self, manifest: dict, version: str) -> bytes:
        manifest["version"], manifest["pipeline"] = version, self.pipeline
        # through JSON once, so the signature covers exactly what is written (dates as text...)
        signed = sign_manifest(json.loads(json.dumps(manifest, default=str)), self.key)
        return json.dumps(signed, indent=2).encode()

    def _publish(self, staging: Path, manifest: dict) -> str:
        """Rename the staging folder to the next free version name (atomic; retried on a race)."""
        taken = [p.name for p in self.root.glob("v[0-9][0-9][0-9][0-9]*") if is_version_name(p.name)]
        number = max(map(_number, taken), default=0) + 1
        while True:
            version = f"v{number:04d}"
            (staging / MANIFEST).write_bytes(self._sign(manifest, version))
            for path in staging.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            try:
                os.rename(staging, self.root / version)
                return version
            except OSError:
                if not (self.root / version).exists():
                    raise
                number += 1

    def _publish_remote(self, fmt: str, blob: bytes, reference: bytes, facts: dict) -> str:
        """Object storage: claim the next free number exclusively, write the files, the manifest last."""
        taken = {p.parent.name for p in self.root.glob("v[0-9][0-9][0-9][0-9]*/*")}
        number = max(map(_number, filter(is_version_name, taken)), default=0) + 1
        while not create_exclusive(self.root / f"v{number:04d}" / CLAIM, now_utc().encode()):
            number += 1
        version = f"v{number:04d}"
        folder = self.root / version
        manifest = _manifest(fmt, blob, reference, facts)
        (folder / manifest["model_file"]).write_bytes(blob)
        (folder / REFERENCE).write_bytes(reference)
        (folder / MANIFEST).write_bytes(self._sign(manifest, version))  # from here on the version exists
        return version

    def manifest(self, version: str) -> dict:
        """The manifest of ``version`` as written, unverified: for listing and display. Loading goes through
        :meth:`verified_manifest`, which reads it again. Read once per store object (a copy each call): a step
        asks for the same manifests many times, one GET each on object storage."""
        if version not in self._manifests:
            self._manifests[version] = self._read_manifest(version)
        return copy.deepcopy(self._manifests[version])

    def _read_manifest(self, version: str) -> dict:
        path = self.folder(version) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelIntegrityError(f"{path}: model version '{version}' does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelIntegrityError(f"{path}: manifest is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise ModelIntegrityError(f"{path}: manifest is not a JSON object")
        return manifest

    def verified_manifest(self, version: str) -> dict:
        """The manifest of ``version`` after its signature is verified (when a signing key is set), and only
        when it names ``version`` of this pipeline: a version copied or moved is refused."""
        path = self.folder(version) / MANIFEST
        self._manifests[version] = self._read_manifest(version)  # what is loaded is checked as read now
        manifest = verify_manifest(self.manifest(version), self.key, path)
        named = (manifest.get("version"), manifest.get("pipeline"))
        if named != (version, self.pipeline):
            raise ModelIntegrityError(f"{path}: manifest is of version {named[0]!r} of pipeline {named[1]!r}, not "
                                      f"{version} of '{self.pipeline}' whose folder holds it; a version is never "
                                      "copied or moved: refusing it")
        return manifest

    def _verified(self, version: str, manifest: dict, file_key: str, hash_key: str) -> tuple[Location, bytes]:
        """The file ``manifest[file_key]`` of ``version`` and its bytes, inside the version folder and matching
        its hash. The bytes returned are the bytes hashed: nothing is read a second time."""
        folder = self.folder(version).resolve()
        name, expected = manifest.get(file_key), manifest.get(hash_key)
        if not isinstance(name, str) or not isinstance(expected, str):
            raise ModelIntegrityError(f"{folder / MANIFEST}: '{file_key}' and '{hash_key}' must be strings")
        path = (folder / name).resolve()
        if path.parent != folder:
            raise ModelIntegrityError(f"{folder / MANIFEST}: {file_key} '{name}' lies outside the version folder "
                                      f"{folder}; refusing it")
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ModelIntegrityError(f"{path}: file listed in the manifest is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, expected):
            raise ModelIntegrityError(
                f"{path}: sha256 {actual[:12]}... does not match the manifest ({expected[:12]}...); "
                "refusing to load it"
            )
        return path, data

    def load(self, version: str, trust_pickle: bool = False):
        """The fitted model of ``version``, after the checks of the module docstring; a pickle only with
        ``trust_pickle`` (the pipeline spec's ``trust_pickle``)."""
        return self.load_verified(version, trust_pickle)[0]

    def load_verified(self, version: str, trust_pickle: bool = False) -> tuple[object, dict]:
        """The fitted model of ``version`` and the verified manifest it was loaded under."""
        manifest = self.verified_manifest(version)
        path, data = self._verified(version, manifest, "model_file", "sha256")
        fmt = sniff_format(data, path)
        if fmt == "pickle" and not trust_pickle:
            raise ModelIntegrityError(f"{path}: {PICKLE_REFUSED}")
        known = _deserialized_copy((fmt, manifest["sha256"]))
        if known is not None:
            return known, manifest
        try:
            model = load_skops(data, path) if fmt == "skops" else pickle.load(io.BytesIO(data))
        except ModelIntegrityError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure to deserialize is an integrity failure
            raise ModelIntegrityError(f"{path}: cannot be loaded as {fmt}: {exc}") from None
        _remember_deserialized((fmt, manifest["sha256"]), model)
        return model, manifest

    def reference(self, version: str) -> pd.DataFrame:
        """The training data of ``version`` (the drift reference while it is champion), verified like the
        model."""
        import pandas as pd

        manifest = self.verified_manifest(version)
        return pd.read_parquet(io.BytesIO(self._verified(version, manifest, "reference_file", "reference_sha256")[1]))

    # ---- champion pointer -----------------------------------------------------------------------
    def _pointer(self, raw: bytes | None = None, read: bool = True, check_version: bool = True) -> dict:
        """The pointer as a dict: read from storage, or parsed from ``raw`` (``read=False``; ``None``: none).
        ``check_version=False`` takes a pointer whose version is no version name (one about to be replaced)."""
        path = self.root / CHAMPION_POINTER
        if read:
            try:
                raw = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                raw = None
        if raw is None:
            return {"version": None, "history": []}
        try:
            pointer = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelIntegrityError(f"{path}: champion pointer is not valid JSON: {exc}") from None
        if (not isinstance(pointer, dict) or not isinstance(pointer.get("history"), list)
                or not isinstance(pointer.get("version"), str | None)):
            raise ModelIntegrityError(f"{path}: champion pointer is not {{\"version\": ..., \"history\": [...]}}")
        if check_version and pointer["version"] is not None and not is_version_name(pointer["version"]):
            raise ModelVersionError(f"{path}: champion pointer names {pointer['version']!r}, which is not a model "
                                    f"version of '{self.pipeline}' (v and four or more digits, e.g. v0003); "
                                    "refusing it")
        return pointer

    def champion_version(self) -> str | None:
        return self._pointer()["version"]

    def champion_history(self) -> list[dict]:
        """Every change of champion, oldest first: ``{version, block, decision, at}``."""
        return self._pointer()["history"]

    def set_champion(self, version: str, block: str, decision: str) -> None:
        """Make ``version`` the champion (atomic pointer swap); the previous champion file stays.

        The change is applied to the pointer as it is when written (:func:`update_atomically`): a writer
        racing with another never drops the other's history entry."""
        self.manifest(version)  # refuse a version that does not exist
        entry = {"version": version, "block": block, "decision": decision, "at": now_utc()}

        def change(raw: bytes | None) -> bytes:
            pointer = self._pointer(raw, read=False, check_version=False)  # a pointer to no version is repaired
            pointer["history"].append(entry)
            pointer["version"] = version
            return json.dumps(pointer, indent=2).encode()

        update_atomically(self.root / CHAMPION_POINTER, change)


def load_model_file(path: Path, trust: bool):
    """Load a user-provided model file (``model_file`` of a prediction-only spec).

    ``.skops`` files load when every type they hold is on the allow-list, or with ``trust``; pickle and
    joblib files (``.pkl``, ``.pickle``, ``.joblib``) run code when loaded and need ``trust``.
    """
    sio = skops_io()

    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".skops":
        if not trust:
            try:
                return load_skops(path.read_bytes(), path)
            except ModelIntegrityError as exc:
                raise ModelIntegrityError(f"{exc} (set trust_model_file: true to load it anyway)") from None
            except Exception as exc:  # noqa: BLE001 -- not a skops file
                raise ModelIntegrityError(f"{path}: cannot be loaded as skops: {exc}") from None
        # the user opted in (trust_model_file): every type the file names is accepted
        return sio.load(path, trusted=sio.get_untrusted_types(file=path))
    if suffix in (".pkl", ".pickle", ".joblib"):
        if not trust:
            raise ModelIntegrityError(f"{path}: a pickle runs code when loaded; set trust_model_file: true "
                                      "to load it, or save the model with skops")
        import joblib

        return joblib.load(path)
    raise ModelIntegrityError(f"{path}: unknown model file type '{suffix}' (use .skops, or .pkl/.joblib)")


#: Models this process deserialized last, by (format, verified sha256 of the file): see the module docstring.
_DESERIALIZED: OrderedDict[tuple[str, str], object] = OrderedDict()
_DESERIALIZED_LOCK = threading.Lock()
MAX_DESERIALIZED = 2


def _deserialized_copy(key: tuple[str, str]):
    """A deep copy of the model kept under ``key``, or ``None`` (none kept, or it cannot be copied)."""
    with _DESERIALIZED_LOCK:
        model = _DESERIALIZED.get(key)
        if model is None:
            return None
        _DESERIALIZED.move_to_end(key)
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 -- a model that cannot be copied is deserialized again
        return None


def _remember_deserialized(key: tuple[str, str], model) -> None:
    """Keep a copy of ``model`` (the caller's own stays the caller's), unless it cannot be copied."""
    try:
        kept = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 -- such a model is deserialized at every load
        return
    with _DESERIALIZED_LOCK:
        _DESERIALIZED[key] = kept
        while len(_DESERIALIZED) > MAX_DESERIALIZED:
            _DESERIALIZED.popitem(last=False)
