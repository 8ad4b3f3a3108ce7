"""Write a manifest TSV (``file``, ``n_rows``) for the 3,388 Tahoe-100M expression files.

The manifest lets the workflow plan row-range shards (``source.cells_per_shard``) without
opening any data file, and is what the DAG-scale dry run uses. Without ``--from-files`` the
row counts are *nominal* and deterministic: the dataset's 95,624,334 cells
(``pass_filter == "full"``) spread as evenly as possible over the files, i.e. the first
1,422 files get 28,225 rows and the other 1,966 get 28,224. With ``--from-files DIR`` the exact
counts are read from the Parquet footers of ``DIR/data/train-NNNNN-of-MMMMM.parquet``.

    python benchmarks/make_manifest.py -o resources/manifest.tsv
    python benchmarks/make_manifest.py -o manifest.tsv --from-files resources/hub/<revision>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

N_FILES = 3388
N_CELLS = 95_624_334


def nominal_rows(n_files: int = N_FILES, n_cells: int = N_CELLS) -> list[int]:
    """``n_cells`` split over ``n_files``: the first ``n_cells % n_files`` files get one more."""
    base, extra = divmod(n_cells, n_files)
    return [base + (1 if i < extra else 0) for i in range(n_files)]


def rows_from_files(root: Path, n_files: int) -> list[int]:
    import pyarrow.parquet as pq

    out = []
    for i in range(n_files):
        path = root / "data" / f"train-{i:05d}-of-{n_files:05d}.parquet"
        out.append(pq.ParquetFile(path).metadata.num_rows)
    return out


def write_manifest(path: Path, rows: list[int]) -> None:
    """Atomic write: a reader never sees a half-written manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write("file\tn_rows\n")
        fh.writelines(f"{i}\t{n}\n" for i, n in enumerate(rows))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-o", "--output", type=Path, required=True, help="manifest TSV to write")
    ap.add_argument(
        "--n-files", type=int, default=N_FILES, help=f"number of files (default {N_FILES})"
    )
    ap.add_argument(
        "--n-cells",
        type=int,
        default=N_CELLS,
        help=f"total rows for nominal counts (default {N_CELLS:,})",
    )
    ap.add_argument(
        "--from-files",
        type=Path,
        help="read exact row counts from the Parquet footers under DIR/data",
    )
    args = ap.parse_args(argv)
    if args.n_files < 1 or args.n_cells < args.n_files:
        ap.error("need --n-files >= 1 and --n-cells >= --n-files")
    rows = (
        rows_from_files(args.from_files, args.n_files)
        if args.from_files
        else nominal_rows(args.n_files, args.n_cells)
    )
    write_manifest(args.output, rows)
    print(f"{args.output}: {len(rows)} files, {sum(rows):,} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
