"""The outputs of one summary job over a group of shards (``summarize.shards_per_job``).

A group's files have one shard's layout (data contract: ``results/shards/<group>/``), so the
merges read groups as they read shards: the shards' cells concatenated in shard order, their
gene statistics and pseudobulk counts summed, and a list of their QC records. A group of one
shard writes exactly that shard's summary. The shards arrive one at a time (a generator), so
a job holds one shard's tables plus the group's running sums.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.errors import InputError
from tahoeflow.merge.gene_stats import sum_gene_stats_tables
from tahoeflow.merge.pseudobulk import sum_pseudobulk_tables, write_pseudobulk

ShardSummary = tuple[str, pa.Table, pa.Table, pa.Table, dict[str, Any]]
"""(shard name, cells, gene statistics, pseudobulk, QC record) of one shard."""


def write_group(summaries: Iterable[ShardSummary], out: Mapping[str, str | Path]) -> int:
    """Write a group's ``cells``, ``genes``, ``pseudobulk`` and ``qc`` files (keys of ``out``)
    from its shards' summaries, in shard order; returns the number of shards.

    One shard: its tables and its QC record as they are. Several: cells streamed into one
    file, gene statistics and pseudobulk counts summed (raw counts: exact integers; the
    gene statistics' float sums add in shard order), the pseudobulk written one cell line per
    row group (as the partial merges are) and the QC records as a JSON list.
    """
    it = iter(summaries)
    first = next(it, None)
    if first is None:
        raise InputError(out["cells"], "a summary group with no shard")
    second = next(it, None)
    if second is None:
        _, cells, genes, pb, qc = first
        tio.write_parquet(cells, out["cells"])
        tio.write_parquet(genes, out["genes"])
        tio.write_parquet(pb, out["pseudobulk"])
        tio.write_json(qc, out["qc"])
        return 1

    records: list[dict[str, Any]] = []
    genes_in: list[tuple[str, pa.Table]] = []
    with tio.atomic_path(out["cells"]) as tmp:
        writer: pq.ParquetWriter | None = None

        def pseudobulk_tables() -> Iterator[tuple[str, pa.Table]]:
            # drives the job: each shard's cells are written as it arrives, its gene table
            # kept (one row per gene), its pseudobulk handed to the running sums
            nonlocal writer
            for name, cells, genes, pb, qc in itertools.chain((first, second), it):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, cells.schema, compression="zstd")
                writer.write_table(cells)
                records.append(qc)
                genes_in.append((name, genes))
                yield name, pb

        try:
            sums = sum_pseudobulk_tables(pseudobulk_tables())
        finally:
            if writer is not None:
                writer.close()
    tokens, acc = sum_gene_stats_tables(genes_in)
    tio.write_parquet(pa.table({"token_id": pa.array(tokens, pa.int64()), **acc}), out["genes"])
    write_pseudobulk(sums, out["pseudobulk"])
    tio.write_json(records, out["qc"])
    return len(records)


def qc_records(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The shards' QC records from ``qc.json`` files: one record (a shard's) or a list of
    records (a group's) each; an unreadable file is an InputError naming it."""
    out: list[dict[str, Any]] = []
    for p in paths:
        try:
            value = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise InputError(p, f"not a readable QC record ({e})") from None
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(r, dict) for r in items):
            raise InputError(p, "not a QC record or a list of QC records")
        out.extend(items)
    return out
