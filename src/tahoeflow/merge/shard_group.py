"""The outputs of one summary job over a group of shards (``summarize.shards_per_job``).

A group's files have one shard's layout (data contract: ``results/shards/<group>/``), so the
merges read groups as they read shards: the shards' cells and pseudobulk tables one after
another in shard order, their gene statistics summed, and a list of their QC records. A group
of one shard writes exactly that shard's summary. The shards arrive one at a time (a
generator), so a job holds one shard's tables plus the group's gene sums.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.cells.summarize import sum_gene_stats_tables
from tahoeflow.errors import InputError

ShardSummary = tuple[str, pa.Table, pa.Table, pa.Table, dict[str, Any]]
"""(shard name, cells, gene statistics, pseudobulk, QC record) of one shard."""


def write_group(summaries: Iterable[ShardSummary], out: Mapping[str, str | Path]) -> int:
    """Write a group's ``cells``, ``genes``, ``pseudobulk`` and ``qc`` files (keys of ``out``)
    from its shards' summaries, in shard order; returns the number of shards.

    One shard: its tables and its QC record as they are. Several: the cells and pseudobulk
    tables streamed into one file each, shard after shard (the merges sum the pseudobulk, row
    group by row group: summing it here would hold all the group's distinct rows at once),
    the gene statistics summed (one row per gene; float sums added in shard
    order) and the QC records as a JSON list.
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
    genes_sum: pa.Table | None = None
    with tio.atomic_path(out["cells"]) as cells_tmp, tio.atomic_path(out["pseudobulk"]) as pb_tmp:
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for name, cells, genes, pb, qc in itertools.chain((first, second), it):
                for key, tmp, table in (("cells", cells_tmp, cells), ("pb", pb_tmp, pb)):
                    if key not in writers:
                        writers[key] = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                    writers[key].write_table(table)
                records.append(qc)
                # running sums, added in shard order (as the merges add their inputs)
                genes_sum = genes if genes_sum is None else _sum_genes(genes_sum, genes, name)
                del cells, genes, pb  # before the next shard is read
        finally:
            for w in writers.values():
                w.close()
    tio.write_parquet(genes_sum, out["genes"])
    tio.write_json(records, out["qc"])
    return len(records)


def _sum_genes(total: pa.Table, genes: pa.Table, name: str) -> pa.Table:
    tokens, acc = sum_gene_stats_tables([("sum", total), (name, genes)])
    return pa.table({"token_id": pa.array(tokens, pa.int64()), **acc})


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
