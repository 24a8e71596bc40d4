"""Object-store clients behind ``storage.location``: ``s3://``, ``gs://`` and ``az://`` URLs parsed and
checked, one obstore client per bucket and options, credentials, the process-wide storage options,
and one-line errors.

Standard library only at import (obstore is imported where a client is made) and no ``storage``
import at all: the shard cache's download helper process loads this file by path, without the
package (no polars, no h5py; see ``storage.cache_fetch``).
"""

from __future__ import annotations

import os
import posixpath
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

OBJECT_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az"}

_OPTIONS: dict[str, str] = {}  # process-wide --storage-option overrides
_STORES: dict[tuple, Any] = {}
_STORES_LOCK = threading.Lock()
_FORKED_AFTER_USE = False


def _after_fork_in_child() -> None:
    # obstore's async runtime does not survive fork(): a child of a process that used it hangs or
    # crashes on its first request (seen with DataLoader workers). Say so instead.
    global _FORKED_AFTER_USE, _STORES_LOCK
    _STORES_LOCK = threading.Lock()
    if _STORES:
        _FORKED_AFTER_USE = True
        _STORES.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocationError(ValueError):
    """A URL bindset cannot use (malformed, unsupported scheme, unreachable bucket, no credentials).
    Its message is one line meant for the user."""


class StoreError(OSError):
    """An object-store request failed (no such bucket, no credentials, denied, unreachable)."""


def set_storage_options(options: dict[str, str]) -> None:
    """Options every ``ObjectPath`` created afterwards carries (``--storage-option key=value``)."""
    _OPTIONS.clear()
    _OPTIONS.update({str(k): str(v) for k, v in options.items()})


def default_options() -> dict[str, str]:
    """A copy of the options ``set_storage_options`` set: what an ``ObjectPath`` made without its own carries."""
    return dict(_OPTIONS)


def bucket_ok(bucket: str) -> bool:
    return 3 <= len(bucket) <= 255 and all(c.isalnum() or c in "-._" for c in bucket)


def parse_object_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of an object-store URL: the scheme canonical (``s3a`` -> ``s3``), the key
    normalized (no leading or trailing ``/``, no ``.`` parts; "" for the bucket itself). Raises
    ``LocationError`` for a URL bindset cannot use."""
    parts = urlsplit(url)
    scheme = OBJECT_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise LocationError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    if not parts.netloc or not bucket_ok(parts.netloc):
        raise LocationError(
            f"malformed URL {url!r}: expected {parts.scheme}://bucket/path with a bucket name "
            "of 3 or more letters, digits, '-', '.' or '_'"
        )
    if parts.query or parts.fragment:
        raise LocationError(f"malformed URL {url!r}: query strings and fragments are not supported")
    key = posixpath.normpath(parts.path.lstrip("/")) if parts.path.strip("/") else ""
    if key in (".", ""):
        key = ""
    if key.startswith(".."):
        raise LocationError(f"malformed URL {url!r}: the path climbs above the bucket")
    return scheme, parts.netloc, key


def get_store(scheme: str, bucket: str, options: dict[str, str], url: str):
    """The obstore client for ``scheme://bucket`` with ``options``, made once per process (``url``
    names the location in errors)."""
    if _FORKED_AFTER_USE:
        raise LocationError(
            f"{url}: this process was forked from one that had used object storage, "
            "which cannot work; start workers with the 'spawn' method (or read through "
            "storage.cache, which does)"
        )
    ident = (scheme, bucket, tuple(sorted(options.items())))
    with _STORES_LOCK:
        store = _STORES.get(ident)
        if store is None:
            store = _STORES[ident] = _make_store(scheme, bucket, options)
    return store


MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024  # parts of large uploads; object_store puts smaller files in one request


def _make_store(scheme: str, bucket: str, options: dict[str, str]):
    from obstore.store import AzureStore, GCSStore, S3Store

    config = dict(options)
    client: dict[str, Any] = {}
    # Plain-HTTP endpoints (a local S3 server) must be allowed explicitly, by env or option.
    allow_http = (
        config.pop("allow_http", None) or config.pop("aws_allow_http", None) or os.environ.get("AWS_ALLOW_HTTP")
    )
    if allow_http is not None:
        client["allow_http"] = str(allow_http).lower() in ("1", "true", "yes")
    if scheme == "s3" and _no_credential_source(config):
        raise StoreError(
            f"no credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile "
            "or web identity, or pass --storage-option (instance metadata is disabled by "
            "AWS_EC2_METADATA_DISABLED)"
        )
    try:
        if scheme == "s3":
            provider = _profile_credentials(config)
            return S3Store(bucket, config=config or None, client_options=client or None, credential_provider=provider)
        if scheme == "gs":
            return GCSStore(bucket, config=config or None, client_options=client or None)
        return AzureStore(bucket, config=config or None, client_options=client or None)
    except Exception as exc:  # noqa: BLE001
        raise LocationError(f"storage options for {scheme}://{bucket}: {first_line(exc)}") from None


def _no_credential_source(config: dict[str, str]) -> bool:
    """True when AWS_EC2_METADATA_DISABLED rules out instance metadata and no other source of the
    chain is configured (object_store would still ask 169.254.169.254, which boto3 would not)."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() not in ("1", "true"):
        return False
    keys = ("access_key_id", "aws_access_key_id", "skip_signature", "aws_skip_signature")
    env = (
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_PROFILE",
    )
    if any(k in config for k in keys) or any(os.environ.get(k) for k in env):
        return False
    files = [
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    return not any(Path(f).expanduser().is_file() for f in files)


def _profile_credentials(config: dict[str, str]):
    """boto3's full provider chain when the user relies on a shared credentials/config profile
    (``AWS_PROFILE``, ``~/.aws/credentials``), which object_store's own chain (environment, web
    identity, container and instance metadata) does not read; None otherwise."""
    if any(k in config for k in ("access_key_id", "aws_access_key_id")) or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    files = [
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    if not os.environ.get("AWS_PROFILE") and not any(Path(f).expanduser().is_file() for f in files):
        return None
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:  # boto3 not installed: object_store's chain only
        return None
    return Boto3CredentialProvider()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def store_error(location: Any, exc: BaseException) -> StoreError:
    """One line a user can act on, from obstore's multi-line error (``location``: an ``ObjectPath``)."""
    text = str(exc)
    first = first_line(exc)
    where = f"{location.scheme}://{location.bucket}"
    # With no keys the chain falls through to the instance-metadata service (169.254.169.254, or
    # AWS_METADATA_ENDPOINT): its failure means "no credentials", not "unreachable store".
    if (
        "169.254.169.254" in text
        or "/latest/api/token" in text
        or "/latest/meta-data" in text
        or "credential" in text.lower()
        or "Unauthenticated" in type(exc).__name__
    ):
        return StoreError(
            f"no credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a "
            f"profile, web identity or instance role) or pass --storage-option ({first[:160]})"
        )
    if "NoSuchBucket" in text or ("404" in text and "list" in text.lower()):
        return StoreError(f"bucket {where} does not exist or is not visible with these credentials")
    if "403" in text or "AccessDenied" in text or "PermissionDenied" in type(exc).__name__:
        return StoreError(f"access denied to {location.url}: {first[:200]}")
    if "connect" in text.lower() or "dns" in text.lower():
        return StoreError(f"cannot reach the object store for {where}: {first[:200]}")
    return StoreError(f"{location.url}: {first[:300]}")
