"""Project the cells of a group of shards (read one at a time) onto the principal components."""

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed.pca import pca_result_from_npz, project
from tahoeflow.logs import run
from tahoeflow.workflow_io import data_paths, hvg_tokens, load_hvg_matrix


def main(smk, log):
    pca = pca_result_from_npz(smk.input.model)
    tokens = hvg_tokens(smk.input.hvg)
    names = [f"pc{i + 1}" for i in range(pca.n_components)]
    schema = pa.schema([("cell_id", pa.string())] + [(c, pa.float32()) for c in names])
    n = 0
    with (
        tio.atomic_path(smk.output[0]) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as w,
    ):
        for s, p in zip(smk.params.shards, data_paths(smk), strict=True):
            X, cell_ids = load_hvg_matrix(
                smk, log, shard=s, data_path=p, tokens=tokens, with_ids=True
            )
            Z = project(X, pca)
            cols_out = {"cell_id": pa.array(cell_ids, pa.string())}
            cols_out.update({c: Z[:, i] for i, c in enumerate(names)})
            w.write_table(pa.table(cols_out, schema=schema))
            n += Z.shape[0]
    log(f"projected {n} cells of {len(smk.params.shards)} shard(s) onto {len(names)} components")


run(main, snakemake)  # noqa: F821
