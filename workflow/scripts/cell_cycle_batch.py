"""Cell-cycle scores and phases of the cells of a group of shards (read one at a time)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.phenotypes.cellcycle import SCORE_SCHEMA, score_cells, scorer_from_draw
from tahoeflow.workflow_io import data_paths, load_filtered_shard

SCHEMA = pa.schema([(k, getattr(pa, v)()) for k, v in SCORE_SCHEMA.items()])


def main(smk, log):
    scorer = scorer_from_draw(json.loads(open(smk.input.draw).read()))
    n = 0
    with (
        tio.atomic_path(smk.output[0]) as tmp,
        pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as w,
    ):
        if scorer is None:  # skipped (the reason is in the draw): no rows, no shard read
            w.write_table(SCHEMA.empty_table())
            log("cell-cycle scoring skipped (see the draw's reason): no rows")
            return
        for s, p in zip(smk.params.shards, data_paths(smk), strict=True):
            loaded, vocab = load_filtered_shard(smk, log, shard=s, data_path=p)
            s_score, g2m_score, phase = score_cells(loaded.X, scorer, columns=vocab.lookup)
            obs = loaded.obs
            cols = {k: obs[k].to_numpy() for k in list(SCORE_SCHEMA)[:7]}
            cols.update(S_score=s_score, G2M_score=g2m_score, phase=phase)
            w.write_table(pa.table(cols, schema=SCHEMA))
            n += len(phase)
    log(f"scored {n} cells of {len(smk.params.shards)} shard(s)")


run(main, snakemake)  # noqa: F821
