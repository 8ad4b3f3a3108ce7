"""Build an h5ad from the shared real data (never copied into the repository)."""

from tahoeflow.logs import run
from tahoeflow.sources.real_data import prepare_h5ad


def main(smk, log):
    adata = prepare_h5ad(smk.params.kind, smk.input[0], smk.output[0])
    log(f"{smk.params.kind}: {adata.n_obs} observations x {adata.n_vars} genes -> {smk.output[0]}")


run(main, snakemake)  # noqa: F821
