"""Single-cell Welch t-tests (scanpy's rank_genes_groups t-test) for the top pseudobulk conditions."""

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from tahoeflow import io as tio
from tahoeflow.cells.normalize import log_normalize
from tahoeflow.de.design import PLATE_SEP
from tahoeflow.de.gather import contrast_calls
from tahoeflow.de.tables import WELCH_SCHEMA, gene_annotation
from tahoeflow.de.welch import welch_conditions_from_calls, welch_de
from tahoeflow.logs import run
from tahoeflow.workflow_io import as_shard, load_filtered_shard


def main(smk, log):
    p = smk.params
    # the topTable read in batches: one row per contrast with its calls (table-wide FDR)
    calls = contrast_calls(smk.input.toptable)
    empty = calls.empty
    # the conditions listed in de.welch.conditions, then the most called (table-wide FDR)
    conds = welch_conditions_from_calls(
        calls, p.conditions, p.max_conditions,
        warn=lambda msg: log(f"WARNING: de.welch.conditions: {msg}"),
    )  # fmt: skip
    log(f"Welch tests for {len(conds)} conditions: {conds}")
    if not conds:  # nothing to test: an empty table with the schema, the reason in the log
        why = (
            "the pseudobulk topTable is empty (no contrast was tested; the reason is in "
            "results/de/metrics.json)"
            if empty
            else "no pseudobulk contrast has a gene with adj.P.Val.global < 0.05"
        )
        line = f"WARNING: {smk.output[0]}: Welch tests skipped, {why}"
        log(line)
        if empty:  # a stage skipped, not just a contrast without calls
            print(line, file=sys.stderr)
        tio.write_parquet(WELCH_SCHEMA.empty_table(), smk.output[0])
        return
    # held: the treated cells of the conditions and the controls of their lines and plates
    wanted_lines = {(c[2], pl) for c in conds for pl in c[3].split(PLATE_SEP)}
    wanted_treated = {(c[0], c[1], c[2], pl) for c in conds for pl in c[3].split(PLATE_SEP)}
    obs_parts, X_parts = [], []
    path_of = dict(zip(p.files, smk.input.data, strict=True))
    for shard in map(as_shard, p.shards):
        ls, vocab = load_filtered_shard(smk, log, shard=shard, data_path=path_of[shard.file_index])
        obs = ls.obs
        ctrl = obs["is_control"].to_numpy(bool)
        keep = ctrl & pd.MultiIndex.from_frame(obs[["cell_line_id", "plate"]]).isin(
            list(wanted_lines)
        )
        keep |= pd.MultiIndex.from_frame(obs[["drug", "dose_uM", "cell_line_id", "plate"]]).isin(
            list(wanted_treated)
        )
        if keep.any():
            obs_parts.append(ls.obs[keep].reset_index(drop=True))
            X_parts.append(log_normalize(ls.X[np.flatnonzero(keep)]))
        log(f"shard {shard.name}: kept {int(keep.sum())} cells (conditions and their controls)")
    frames = []
    if obs_parts:  # vocab is the same for every shard
        obs = pd.concat(obs_parts, ignore_index=True)
        ens, sym = gene_annotation(vocab.token_ids, pd.read_parquet(smk.input.genes))
        X = sp.vstack(X_parts).tocsr()
        for drug, dose, line, plate in conds:
            same = (obs["cell_line_id"] == line) & obs["plate"].isin(plate.split(PLATE_SEP))
            treated = (same & (obs["drug"] == drug) & (obs["dose_uM"] == dose)).to_numpy()
            control = (same & obs["is_control"]).to_numpy()
            if treated.sum() < 2 or control.sum() < 2:
                log(
                    f"skipped {drug} {dose} in {line} on {plate}: {int(treated.sum())} treated, {int(control.sum())} control cells"
                )
                continue
            res = welch_de(X, treated, control, gene_ids=vocab.token_ids)
            res.insert(1, "ensembl_id", ens)
            res.insert(2, "gene_symbol", sym)
            res.insert(0, "plate", plate)
            res.insert(0, "cell_line_id", line)
            res.insert(0, "dose_uM", dose)
            res.insert(0, "drug", drug)
            res["n_treated_cells"], res["n_control_cells"] = int(treated.sum()), int(control.sum())
            frames.append(res)
    if not frames:
        log("no condition had >= 2 treated and >= 2 control cells: the table is empty")
        tio.write_parquet(WELCH_SCHEMA.empty_table(), smk.output[0])
        return
    out = pd.concat(frames, ignore_index=True)
    tio.write_parquet(
        pa.Table.from_pandas(out, schema=WELCH_SCHEMA, preserve_index=False), smk.output[0]
    )


run(main, snakemake)  # noqa: F821
