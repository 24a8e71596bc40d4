"""Shards: HDF5 tensors + Parquet index + Parquet rejects, one interface per role.

- ``storage.shard_writer``: ``ShardWriter`` (staging, commit protocol, write-failure handling) and
  ``ShardSummary``, ``ShardWriteError``;
- ``storage.shard_reader``: ``ShardReader`` (the one HDF5 reader of bindset), ``ShardReaderPool``,
  ``CorruptSampleError``, ``committed_shard_ids``.

This module gathers both for callers that use the pair.
"""

from storage.schema import REJECT_SCHEMA, index_schema
from storage.shard_meta import (
    SHARD_BYTES_KEY,
    SHARD_SHA256_KEY,
    read_shard_file_metadata,
    shard_file_metadata,
)
from storage.shard_reader import CorruptSampleError, ShardReader, ShardReaderPool, committed_shard_ids
from storage.shard_writer import ShardSummary, ShardWriteError, ShardWriter, os_reason

__all__ = [
    "CorruptSampleError",
    "index_schema",
    "REJECT_SCHEMA",
    "ShardReader",
    "ShardReaderPool",
    "ShardSummary",
    "ShardWriter",
    "committed_shard_ids",
    "os_reason",
    "read_shard_file_metadata",
    "shard_file_metadata",
    "ShardWriteError",
    "SHARD_BYTES_KEY",
    "SHARD_SHA256_KEY",
]
