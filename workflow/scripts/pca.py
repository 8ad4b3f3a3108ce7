"""Sum the per-shard Gram matrices (one at a time) and solve the eigenproblem."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed.pca import combine_gram, pca_from_gram, pca_result_to_npz
from tahoeflow.errors import config_keys
from tahoeflow.logs import run


def _parts(paths):
    for p in paths:
        with np.load(p) as z:
            yield z["gram"], z["colsum"], int(z["n"])


def main(smk, log):
    G, colsum, n = combine_gram(_parts(smk.input.grams))
    log(f"summed {len(smk.input.grams)} Gram matrices: {n} cells x {G.shape[0]} HVGs")
    with config_keys(n_components="embed.n_components"):
        pca = pca_from_gram(G, colsum, n, smk.params.n_components, center=smk.params.center)
    pca_result_to_npz(smk.output.model, pca)
    k = pca.n_components
    tio.write_csv(
        pd.DataFrame(
            {
                "pc": [f"pc{i + 1}" for i in range(k)],
                "explained_variance_ratio": pca.explained_variance_ratio,
            }
        ),
        smk.output.variance,
    )
    hvg = pq.read_table(smk.input.hvg).to_pandas()
    hvg = hvg[hvg["highly_variable"]].reset_index(drop=True)
    comp = pd.DataFrame(pca.components.T, columns=[f"pc{i + 1}" for i in range(k)])
    comp.insert(0, "mean", pca.mean)
    for c in ("gene_symbol", "ensembl_id", "token_id"):
        comp.insert(0, c, hvg[c])
    tio.write_parquet(pa.Table.from_pandas(comp, preserve_index=False), smk.output.components)
    log(
        f"{k} components; variance ratio of the first five: {np.round(pca.explained_variance_ratio[:5], 4).tolist()}"
    )


run(main, snakemake)  # noqa: F821
