"""The PCs of the model sample's cells, for the forests that use them (models.rf.use_pcs)."""

from tahoeflow.logs import run
from tahoeflow.models.sample_file import sample_embeddings_file


def main(smk, log):
    n = sample_embeddings_file(smk.input.sample, smk.input.embeddings, smk.output[0])
    log(f"PCs of {n} sampled cells")


run(main, snakemake)  # noqa: F821
