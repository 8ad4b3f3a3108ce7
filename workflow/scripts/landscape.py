"""The drug-response landscape: sensitivity heatmaps, MoA distributions, signature embeddings and
the MoA nearest-neighbour accuracy against a label-permutation baseline."""

import sys

import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.phenotypes import landscape as ls


def main(smk, log):
    def warn(message):  # one line, to the job log and to stderr
        log(message)
        print(message, file=sys.stderr, flush=True)

    i, o, p = smk.input, smk.output, smk.params
    drugs = pq.read_table(i.drugs).to_pandas()
    pooled = ls.pooled_sensitivity(pq.read_table(i.sensitivity).to_pandas(), "log2fc")
    metrics = {"moa_column": p.moa_column, "signature": p.signature}
    why_sens = None if len(pooled) else "no (line, drug, dose) has a sensitivity value (qc)"
    moa = ls.moa_map(drugs, p.moa_column, sorted(set(pooled["drug"])))
    mats = ls.heatmap_matrices(pooled) if why_sens is None else {}
    metrics["sensitivity"] = {"n_values": int(len(pooled)), "n_lines": int(
        pooled["cell_line_id"].nunique()), "n_drugs": int(pooled["drug"].nunique())}  # fmt: skip
    ls.plot_heatmaps(mats, o.heatmap, why_sens)
    ls.plot_moa_distributions(pooled, moa, o.moa, why_sens)

    why_sig = None
    if not i.toptable:
        why_sig = p.no_toptable
    elif tio.parquet_file(i.toptable[0]).metadata.num_rows == 0:
        why_sig = "the DE topTable has no rows (see results/de/metrics.json)"
    if why_sig is None:
        # streamed: the whole-atlas topTable (58.9M rows) held as one DataFrame took 14.5 GB
        sig = ls.drug_signatures_from_parquet(i.toptable[0], p.signature)
        sig_moa = ls.moa_map(drugs, p.moa_column, [k.split("|")[0] for k in sig.index])
        nn = ls.moa_nn_accuracy(sig, sig_moa, exclude=p.exclude_moa,
                                n_permutations=p.n_permutations, seed=p.seed)  # fmt: skip
        metrics.update(nn)
        if len(sig) >= 2:
            Z, evr = ls.pca_coords(sig, p.seed)
            metrics["pca_explained_variance_ratio"] = [float(x) for x in evr]
            ls.plot_embedding(Z, list(sig.index), sig_moa.to_numpy(), o.pca,
                              f"Drug signatures (mean logFC over {sig.shape[1]} genes): PCA",
                              "PC")  # fmt: skip
            U, why_umap = ls.umap_coords(sig, p.seed)
            ls.plot_embedding(U, list(sig.index), sig_moa.to_numpy(), o.umap,
                              "Drug signatures: UMAP (correlation)", "UMAP", why_umap or None)  # fmt: skip
            if why_umap:
                metrics["umap"] = f"skipped: {why_umap}"
        else:
            why_sig = f"{len(sig)} drug signature(s): an embedding needs 2"
    if why_sig is not None:
        metrics["skipped"] = why_sig
        ls.plot_embedding(None, [], [], o.pca, "Drug signatures: PCA", "PC", why_sig)
        ls.plot_embedding(None, [], [], o.umap, "Drug signatures: UMAP", "UMAP", why_sig)
    if "skipped" in metrics:
        warn(f"WARNING: {o.metrics}: MoA nearest-neighbour accuracy skipped, {metrics['skipped']}")
    else:
        log(f"MoA NN accuracy {metrics['moa_nn_accuracy']:.3f} vs permutation mean "
            f"{metrics['permutation_mean']:.3f} (p = {metrics['p_value']:.3g})")  # fmt: skip
    tio.write_json(metrics, o.metrics)


run(main, snakemake)  # noqa: F821
