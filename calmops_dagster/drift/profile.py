"""The reference side of :func:`~calmops_dagster.drift.detect_drift`, prepared once and reused for every block.

Between two promotions every block is compared with the same reference, and half of a numeric column's cost
is sorting the reference. A :class:`ReferenceProfile` holds what the tests read from the reference (per
column: sorted non-NaN values or value counts, non-missing count, dtype; the row count; the multivariate
tests' sample and the random state after drawing it), so ``detect_drift(profile, current)`` does only the
current block's work and returns the report ``detect_drift(reference, current)`` would, row for row. This is
NannyML's ``fit(reference)`` / ``calculate(analysis)`` split.

What a profile depends on besides the reference (:class:`ProfileSettings`): ``categorical_columns`` (which
numeric columns keep counts instead of sorted values), ``multivariate_sample_size`` and ``seed`` (the
sample). A profile used with a config that differs in one of them is refused with
:class:`ProfileMismatchError`; every other setting is applied per block.

A profile is stored as one ``.npz`` file read with ``allow_pickle=False`` (no code runs when loading it):
the sorted values and counts as arrays, the rest as JSON, the sample as Parquet bytes; with the model
signing key, an HMAC over all of them, so a file planted beside a signed model is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calmops_dagster.drift.columns import ReferenceColumn, check_frame
from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.errors import DriftInputError
from calmops_dagster.drift.multivariate import ReferenceSample

#: Version of the file layout; a file of another version is rebuilt.
FILE_FORMAT = 1
SIGNATURE = "signature"


class ProfileMismatchError(DriftInputError):
    """A profile prepared with settings other than the ``DriftConfig`` it is used with."""


class ProfileFileError(ValueError):
    """Bytes that are not a readable drift profile, or a profile that cannot be written exactly."""


@dataclass(frozen=True)
class ProfileSettings:
    """The settings of a :class:`DriftConfig` a profile is prepared under (see the module docstring)."""

    categorical_columns: tuple[str, ...]
    multivariate_sample_size: int
    seed: int

    @classmethod
    def of(cls, config: DriftConfig) -> ProfileSettings:
        return cls(tuple(sorted(set(config.categorical_columns))), config.multivariate_sample_size, config.seed)

    def as_dict(self) -> dict:
        return {"categorical_columns": list(self.categorical_columns),
                "multivariate_sample_size": self.multivariate_sample_size, "seed": self.seed}


class FrameReference:
    """A reference DataFrame read column by column as the tests ask: ``detect_drift``'s one-off path."""

    def __init__(self, frame: pd.DataFrame, config: DriftConfig):
        check_frame("reference", frame)
        self.frame, self.config = frame, config
        self.columns, self.n_rows = frame.columns, len(frame)

    def present(self, name) -> int:
        return int(self.frame[name].notna().sum())

    def column(self, name) -> ReferenceColumn:
        return ReferenceColumn.of(str(name), self.frame[name], self.config)

    def sample(self) -> ReferenceSample:
        return ReferenceSample.draw(self.frame, self.config)


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """A reference frame prepared once for :func:`~calmops_dagster.drift.detect_drift` (module docstring).

    ``source`` names what it was prepared from (the pipeline uses the reference file's sha256); it is
    stored with the profile, never checked by ``detect_drift``.

    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(list("ab"), 2000)})
    >>> cur = pd.DataFrame({"x": rng.normal(1.0, size=2000), "c": rng.choice(list("ab"), 2000)})
    >>> from calmops_dagster.drift import detect_drift
    >>> profile = ReferenceProfile.build(ref, DriftConfig())
    >>> detect_drift(profile, cur).rows.equals(detect_drift(ref, cur).rows)
    True
    """

    columns: pd.Index
    n_rows: int
    reference_columns: dict
    reference_sample: ReferenceSample
    settings: ProfileSettings
    source: str = ""

    @classmethod
    def build(cls, reference: pd.DataFrame, config: DriftConfig | None = None, source: str = "") -> ReferenceProfile:
        """Prepare ``reference`` for ``config`` (default ``DriftConfig()``); a reference ``detect_drift`` would
        refuse (no rows, duplicated columns) raises the same :class:`DriftInputError` here."""
        config = config or DriftConfig()
        frame = FrameReference(reference, config)
        return cls(reference.columns, len(reference), {c: frame.column(c) for c in reference.columns},
                   frame.sample(), ProfileSettings.of(config), source)

    def check(self, config: DriftConfig) -> None:
        """Raise :class:`ProfileMismatchError` unless the profile was prepared under ``config``'s settings."""
        wanted = ProfileSettings.of(config)
        if wanted != self.settings:
            have, want = self.settings.as_dict(), wanted.as_dict()
            diff = ", ".join(f"{k}={have[k]!r} (config: {want[k]!r})" for k in have if have[k] != want[k])
            raise ProfileMismatchError(f"reference profile was prepared with {diff}: prepare it again with "
                                       "ReferenceProfile.build(reference, config)")

    @property
    def fingerprint(self) -> str:
        """Hex digest of the settings and columns: two profiles of one reference with equal fingerprints
        are interchangeable."""
        return settings_fingerprint(self.settings, list(self.columns))

    # the reference side detect_drift reads (as FrameReference)
    def present(self, name) -> int:
        return self.reference_columns[name].n_present

    def column(self, name) -> ReferenceColumn:
        return self.reference_columns[name]

    def sample(self) -> ReferenceSample:
        return self.reference_sample

    # ---- the file ------------------------------------------------------------------------------
    def to_npz(self, key: bytes | None = None) -> bytes:
        """The profile as ``.npz`` bytes (:meth:`from_npz` reads them back equal), signed with ``key`` (HMAC-SHA256
        over every array) when one is given. :class:`ProfileFileError` when something cannot be stored exactly:
        a column name or category that is not a str, int, float or bool, or a sample Parquet does not give back
        as it was."""
        arrays, meta_columns = {}, []
        for i, name in enumerate(self.columns):
            col = self.reference_columns[name]
            entry = {"name": _encode(name, "column name"), "dtype": col.dtype, "numeric": col.numeric,
                     "n_present": col.n_present, "value_types": col.value_types}
            if col.sorted_values is not None:
                arrays[f"sorted_{i}"] = np.asarray(col.sorted_values, dtype=np.float64)
            else:
                entry["values"] = [_encode(v, f"column {name!r}: category") for v in col.value_counts.index]
                arrays[f"counts_{i}"] = col.value_counts.to_numpy(dtype=np.int64)
            meta_columns.append(entry)
        sample = self.reference_sample.rows
        buffer = io.BytesIO()
        try:
            sample.to_parquet(buffer, index=False)
        except (ValueError, TypeError, ImportError) as exc:  # pyarrow's errors derive from these
            raise ProfileFileError(f"the multivariate sample cannot be stored as Parquet: {exc}") from None
        if not _same_frame(pd.read_parquet(io.BytesIO(buffer.getvalue())), sample):
            raise ProfileFileError("the multivariate sample does not read back from Parquet as it was "
                                   "(mixed or missing-value types in an object column)")
        arrays["sample"] = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        meta = {"format": FILE_FORMAT, "n_rows": self.n_rows, "settings": self.settings.as_dict(),
                "source": self.source, "columns": meta_columns,
                "sample_n_rows": self.reference_sample.n_rows, "rng_state": self.reference_sample.rng_state}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        if key is not None:
            arrays[SIGNATURE] = np.frombuffer(_signature(key, arrays).encode(), dtype=np.uint8)
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_npz(cls, data: bytes, key: bytes | None = None) -> ReferenceProfile:
        """A profile from :meth:`to_npz`'s bytes, whose signature must match ``key`` when one is given;
        :class:`ProfileFileError` saying why when they are not one."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if key is not None:
                    arrays = {name: npz[name] for name in npz.files}
                    signed = arrays.pop(SIGNATURE, np.zeros(0, np.uint8)).tobytes().decode()
                    if not hmac.compare_digest(signed, _signature(key, arrays)):
                        raise ProfileFileError("drift profile not signed with the model signing key")
                meta = json.loads(npz["meta"].tobytes())
                if not isinstance(meta, dict) or meta.get("format") != FILE_FORMAT:
                    raise ProfileFileError(f"not a drift profile of format {FILE_FORMAT}")
                names, columns = [], {}
                for i, entry in enumerate(meta["columns"]):
                    name = _decode(entry["name"])
                    if f"sorted_{i}" in npz:
                        values = npz[f"sorted_{i}"]
                        values.flags.writeable = False
                        col = ReferenceColumn(entry["dtype"], entry["numeric"], entry["n_present"], sorted_values=values)
                    else:
                        index = pd.Index([_decode(v) for v in entry["values"]], dtype=object)
                        counts = pd.Series(npz[f"counts_{i}"], index=index)
                        col = ReferenceColumn(entry["dtype"], entry["numeric"], entry["n_present"],
                                              value_counts=counts, value_types=entry["value_types"])
                    names.append(name)
                    columns[name] = col
                rows = pd.read_parquet(io.BytesIO(npz["sample"].tobytes()))
                sample = ReferenceSample(rows, meta["sample_n_rows"], meta["rng_state"])
                settings = meta["settings"]
                return cls(pd.Index(names, dtype=object), meta["n_rows"], columns,
                           sample, ProfileSettings(tuple(settings["categorical_columns"]),
                                                   settings["multivariate_sample_size"], settings["seed"]),
                           meta["source"])
        except ProfileFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, EOFError) as exc:
            raise ProfileFileError(f"not a readable drift profile: {type(exc).__name__}: {exc}") from None


def _signature(key: bytes, arrays: dict) -> str:
    """HMAC-SHA256 over every array's name, dtype, shape and bytes, in name order."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        mac.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        mac.update(value.tobytes())
    return mac.hexdigest()


def settings_fingerprint(settings: ProfileSettings, columns: list) -> str:
    """A short hex digest of a profile's settings and reference columns (the pipeline names its file by it)."""
    text = json.dumps({"settings": settings.as_dict(), "columns": [repr(c) for c in columns]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_TAGS = {str: "s", int: "i", float: "f", bool: "b"}
_TYPES = {tag: kind for kind, tag in _TAGS.items()}


def _encode(value, what: str) -> list:
    """``[tag, value]`` for a str, int, float or bool (exactly these types: ``np.int64(7)`` reads back as
    another value in a note)."""
    tag = _TAGS.get(type(value))
    if tag is None:
        raise ProfileFileError(f"{what} {value!r} is a {type(value).__name__}; a profile file stores str, int, "
                               "float and bool")
    return [tag, value]


def _decode(item) -> object:
    tag, value = item
    return _TYPES[tag](value)


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Equal columns, dtypes and values, and in object columns values of equal types (Parquet reads a
    missing string back as ``None`` whether it was ``None`` or NaN, which ``astype(str)`` tells apart)."""
    if list(a.columns) != list(b.columns) or not a.dtypes.equals(b.dtypes) or not a.equals(b):
        return False
    return all(a[c].map(type).tolist() == b[c].map(type).tolist() for c in a.columns if a[c].dtype == object)
