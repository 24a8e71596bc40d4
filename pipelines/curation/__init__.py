"""Curation of a built dataset: deduplication (exact and near), an ANN index per embedding store,
and export to WebDataset tar shards. Each step is a plain function; ``bindset dedup``, ``bindset
index`` and ``bindset export`` (flows/cli_curation.py) only parse arguments and call them.

- ``dedup.dedup_dataset``: writes ``dedup/<name>.parquet`` (storage.dedup), deletes nothing;
- ``ann_build.build_index`` / ``ann.search_index``: ``embeddings/<encoder-id>/index/<modality>.*`` (faiss);
- ``export.export_webdataset``: tar shards + ``listing.parquet`` + ``export.json``.
"""

from pipelines.curation.ann import search_index
from pipelines.curation.ann_build import build_index
from pipelines.curation.ann_files import index_status
from pipelines.curation.ann_index import IndexParams
from pipelines.curation.dedup import dedup_dataset
from pipelines.curation.export import export_webdataset

__all__ = ["IndexParams", "build_index", "dedup_dataset", "export_webdataset", "index_status", "search_index"]
