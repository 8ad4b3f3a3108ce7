"""Project the cells of a group of shards onto the principal components, from the HVG counts
the Gram job cached (one shard at a time; the shards are not decoded again)."""

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.cells.normalize import log_normalize_selected
from tahoeflow.embed.hvg_cache import read_hvg_cache
from tahoeflow.embed.pca import pca_result_from_npz, project
from tahoeflow.logs import run


def main(smk, log):
    pca = pca_result_from_npz(smk.input.model)
    names = [f"pc{i + 1}" for i in range(pca.n_components)]
    schema = pa.schema([("cell_id", pa.string())] + [(c, pa.float32()) for c in names])
    n = 0
    with (
        tio.atomic_path(smk.output[0]) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as w,
    ):
        for counts, totals, cell_ids in read_hvg_cache(smk.input.cache, pca.n_features):
            Z = project(log_normalize_selected(counts, totals), pca)
            cols_out = {"cell_id": pa.array(cell_ids, pa.string())}
            cols_out.update({c: Z[:, i] for i, c in enumerate(names)})
            w.write_table(pa.table(cols_out, schema=schema))
            n += Z.shape[0]
    log(f"projected {n} cells onto {len(names)} components")


run(main, snakemake)  # noqa: F821
