"""Constants of the Tahoe-100M format (see docs/data_contract.md and the hub's dataset card)."""

from __future__ import annotations

import pyarrow as pa

N_GENES = 62_710
"""Genes in Tahoe-100M's gene_metadata (token ids 3..62712)."""
FIRST_TOKEN = 3
"""Token ids 0, 1, 2 are <pad>, <cls>, <eoc>; genes start at 3."""
CLS_TOKEN = 1
CLS_VALUE = -2.0
"""Every expression row starts with the marker genes[0]=1, expressions[0]=-2."""
N_FILES_HUB = 3388
CONTROL_DRUG = "DMSO_TF"

EXPRESSION_SCHEMA = pa.schema(
    [
        ("genes", pa.list_(pa.int64())),
        ("expressions", pa.list_(pa.float32())),
        ("drug", pa.string()),
        ("sample", pa.string()),
        ("BARCODE_SUB_LIB_ID", pa.string()),
        ("cell_line_id", pa.string()),
        ("moa-fine", pa.string()),
        ("canonical_smiles", pa.string()),
        ("pubchem_cid", pa.string()),
        ("plate", pa.string()),
    ]
)
"""Column order and Arrow types of ``data/train-*.parquet`` on the hub."""

READ_COLUMNS = [
    "genes",
    "expressions",
    "drug",
    "sample",
    "BARCODE_SUB_LIB_ID",
    "cell_line_id",
    "moa-fine",
    "plate",
]
"""The columns the summary step reads (SMILES and PubChem ids are never needed per cell)."""

OBS_STRING_COLUMNS = ["drug", "sample", "BARCODE_SUB_LIB_ID", "cell_line_id", "moa-fine", "plate"]


def data_filename(i: int, n_files: int = N_FILES_HUB) -> str:
    """Hub path of expression file ``i``: ``data/train-00012-of-03388.parquet``."""
    return f"data/train-{i:05d}-of-{n_files:05d}.parquet"


def metadata_filename(kind: str) -> str:
    """Hub path of a metadata table (kind: gene, sample, drug or cell_line)."""
    if kind not in {"gene", "sample", "drug", "cell_line"}:
        raise ValueError(f"unknown metadata kind {kind!r}")
    return f"metadata/{kind}_metadata.parquet"
