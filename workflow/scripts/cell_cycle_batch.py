"""Cell-cycle scores and phases of the cells of a group of shards (read one at a time)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.cells.normalize import log_normalize_selected
from tahoeflow.logs import run
from tahoeflow.phenotypes.cellcycle import (
    SCORE_SCHEMA,
    score_normalized,
    scored_genes,
    scorer_from_draw,
)
from tahoeflow.workflow_io import data_paths
from tahoeflow.workflow_selected import load_selected

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
        tokens = scored_genes(scorer)  # pool genes are token ids here
        for s, p in zip(smk.params.shards, data_paths(smk), strict=True):
            # only the scored genes are kept while the shard is decoded (same values, same bits)
            counts, totals, obs, vocab = load_selected(
                smk, log, tokens, shard=s, data_path=p, with_obs=True
            )
            X = log_normalize_selected(counts, totals)
            s_score, g2m_score, phase = score_normalized(X, scorer, vocab.lookup[tokens])
            cols = {k: obs[k].to_numpy() for k in list(SCORE_SCHEMA)[:7]}
            cols.update(S_score=s_score, G2M_score=g2m_score, phase=phase)
            w.write_table(pa.table(cols, schema=SCHEMA))
            n += len(phase)
    log(f"scored {n} cells of {len(smk.params.shards)} shard(s)")


run(main, snakemake)  # noqa: F821
