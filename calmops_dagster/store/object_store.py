"""The S3 client of the storage seam: a bounded retry policy, and a failing store as one typed line.

Every S3 request of a process with an ``s3://`` storage root goes through :class:`ObjectStoreFileSystem`
(the stores, DuckDB's reads of metric tables' files, Dagster's IO manager): botocore's ``standard`` retries,
:data:`STORE_ATTEMPTS` attempts, s3fs' own loop off; once spent, a failure of the store itself raises
:class:`~calmops_dagster.errors.StoreUnavailableError` naming store, endpoint and failure, while a missing
object stays ``FileNotFoundError`` and a lost conditional write ``FileExistsError``. The policy, timeouts and
worst cases: docs/storage.md ("Retries").
"""

from __future__ import annotations

import os

from s3fs import S3FileSystem

from calmops_dagster.errors import StoreUnavailableError
from calmops_dagster.store.storage import OBJECT_PROTOCOLS, STORAGE_URL_ENV, StorageError

#: Attempts per S3 request (the first and its retries) unless ``AWS_MAX_ATTEMPTS`` says otherwise.
STORE_ATTEMPTS = 4
RETRY_MODES = ("standard", "legacy", "adaptive")
#: S3 error codes that mean these credentials may not use the bucket.
ACCESS_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                  "InvalidToken", "AllAccessDisabled", "AccountProblem", "403")


def store_attempts() -> int:
    """Attempts per request: ``AWS_MAX_ATTEMPTS`` when set (a positive whole number), else
    :data:`STORE_ATTEMPTS`."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not raw:
        return STORE_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise StorageError(f"AWS_MAX_ATTEMPTS={raw!r}: not a whole number of attempts (1 or more)")
    return int(raw)


def retry_mode() -> str:
    """botocore's retry mode: ``AWS_RETRY_MODE`` when set, else ``standard``."""
    mode = os.environ.get("AWS_RETRY_MODE", "").strip() or "standard"
    if mode not in RETRY_MODES:
        raise StorageError(f"AWS_RETRY_MODE={mode!r}: not a retry mode; use one of {', '.join(RETRY_MODES)}")
    return mode


def store_failure(error: BaseException, attempts: int) -> str | None:
    """What failed, in a few words, when ``error`` (or the botocore error s3fs translated into it) is a failure
    of the store itself; ``None`` for anything else (a missing key, a lost conditional write...)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
        SSLError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    tries = f"up to {attempts} attempt{'s' if attempts != 1 else ''}"
    for cause in (error, error.__cause__):
        if isinstance(cause, ConnectTimeoutError):
            return f"connection timed out ({tries})"
        if isinstance(cause, SSLError):
            return f"TLS failed ({tries}): {_one_line(cause)}"
        if isinstance(cause, (EndpointConnectionError, BotoConnectionError)):
            return f"cannot connect ({tries})"
        if isinstance(cause, ReadTimeoutError):
            return f"no answer, read timed out ({tries})"
        if isinstance(cause, ConnectionClosedError):
            return f"connection closed before an answer ({tries})"
        if isinstance(cause, HTTPClientError):
            return f"connection failed ({tries}): {_one_line(cause)}"
        if isinstance(cause, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return f"no usable credentials: {_one_line(cause)}"
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            meta = cause.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            if code == "NoSuchBucket":
                return "the bucket does not exist"
            if code in ACCESS_REFUSED or status == 403:
                return f"access refused ({code or status})"
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                made = int(meta.get("RetryAttempts", attempts - 1)) + 1
                what = f"HTTP {status}" if code in ("", str(status)) else f"{code} (HTTP {status})"
                return f"unavailable: {what}, {made} attempt{'s' if made != 1 else ''}"
    return None


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ObjectStoreFileSystem(S3FileSystem):
    """:class:`s3fs.S3FileSystem` with the retry policy of this module, raising
    :class:`~calmops_dagster.errors.StoreUnavailableError` when the store fails."""

    retries = 1  # s3fs's own retry loop: one pass; botocore's retries (config below) do every retry

    def __init__(self, *args, config_kwargs=None, **kwargs):
        self.attempts = store_attempts()
        config = {"retries": {"mode": retry_mode(), "total_max_attempts": self.attempts}, **(config_kwargs or {})}
        super().__init__(*args, config_kwargs=config, **kwargs)

    async def _call_s3(self, method, *akwarglist, **kwargs):
        try:
            return await super()._call_s3(method, *akwarglist, **kwargs)
        except Exception as exc:
            reason = store_failure(exc, self.attempts)
            if reason is None:
                raise
            raise StoreUnavailableError(f"{self.describe(kwargs.get('Bucket'))}: {reason}") from exc

    def describe(self, bucket: str | None) -> str:
        """``object store s3://bucket/prefix (endpoint URL)``: the storage URL when it names ``bucket``."""
        url = f"s3://{bucket or '?'}"
        configured = os.environ.get(STORAGE_URL_ENV, "").strip().rstrip("/")
        protocol, _, rest = configured.partition("://")
        if protocol.lower() in OBJECT_PROTOCOLS and rest.split("/")[0] == bucket:
            url = configured
        client = self._s3
        endpoint = (client.meta.endpoint_url if client is not None else None) or os.environ.get(
            "AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        return f"object store {url} (endpoint {endpoint})"


def use_for_s3() -> None:
    """Make :class:`ObjectStoreFileSystem` fsspec's ``s3``/``s3a`` in this process, so what opens ``s3://``
    paths through fsspec itself (Dagster's IO manager) gets the same retries and failures."""
    import fsspec

    for protocol in OBJECT_PROTOCOLS:
        if fsspec.get_filesystem_class(protocol) is not ObjectStoreFileSystem:
            fsspec.register_implementation(protocol, ObjectStoreFileSystem, clobber=True)
