"""What an index file says about its shard: the shard file's sha256 and size, in the index's Parquet
footer, so a resuming driver or a reader (storage.cache) can check a shard without downloading it
first. Its own module so that the cache and the shard reader both use it without importing each other."""

from __future__ import annotations

from pathlib import Path

from storage.location import Location, as_location, is_remote

SHARD_SHA256_KEY = "bindset.shard_sha256"
SHARD_BYTES_KEY = "bindset.shard_bytes"


def shard_file_metadata(sha256: str, size: int) -> dict[str, str]:
    """Parquet key-value metadata of an index file: what its shard file must hash to."""
    return {SHARD_SHA256_KEY: sha256, SHARD_BYTES_KEY: str(size)}


def read_shard_file_metadata(index_file: str | Path | Location) -> tuple[str, int] | None:
    """(sha256, bytes) of the shard an index file commits, from its footer alone (one ranged read
    on an object store); None for indexes written before this metadata existed."""
    import pyarrow.parquet as pq

    location = as_location(index_file)
    if is_remote(location):
        import io

        source = io.BytesIO(location.read_bytes())
    else:
        source = location
    meta = pq.read_metadata(source).metadata or {}
    sha = meta.get(SHARD_SHA256_KEY.encode())
    size = meta.get(SHARD_BYTES_KEY.encode())
    if sha is None or size is None:
        return None
    return sha.decode(), int(size)
