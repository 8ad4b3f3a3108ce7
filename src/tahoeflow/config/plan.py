"""The static plan: which files and shards exist and where each input lives, from the config
alone (a manifest, when given, is a small TSV of file names and row counts)."""

import csv
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from tahoeflow.cells.plan import Shard, parse_file_selection, plan_shards
from tahoeflow.config.validate import h5ad_settings
from tahoeflow.errors import ConfigError, config_keys
from tahoeflow.io import RESULTS
from tahoeflow.sources.manifest import hub_manifest_path, read_plates, select_by_plate
from tahoeflow.sources.stream import chunk_path, plan_chunks
from tahoeflow.sources.tahoe import data_filename, metadata_filename

METADATA_KINDS = ("gene", "sample", "drug", "cell_line")


@dataclass(frozen=True)
class Plan:
    """Where each input lives and which shards exist, from the config alone."""

    kind: str
    n_files_total: int
    files: list[int]
    shards: dict[str, Shard]
    root: str  # directory holding data/ and metadata/
    paths: tuple[str, ...] = ()  # source.kind h5ad: the .h5ad files; stream: the chunk files
    manifest: str | None = None  # the manifest the plan used (rows, plates), if any

    def data_path(self, file_index: int) -> str:
        if self.kind in ("h5ad", "stream"):
            return self.paths[file_index]
        return f"{self.root}/{data_filename(file_index, self.n_files_total)}"

    def metadata_path(self, kind: str) -> str:
        return f"{self.root}/{metadata_filename(kind)}"


def read_manifest(path: str | Path) -> dict[int, int]:
    """``file<TAB>n_rows`` rows -> {file index: rows}. ``file`` may be an index or a file name."""
    rows: dict[int, int] = {}
    try:
        fh = open(path, newline="")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ConfigError("source.manifest", f"cannot read {path}: {e.strerror}") from None
    with fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or not {"file", "n_rows"} <= set(reader.fieldnames):
            raise ConfigError("source.manifest", f"{path} needs the columns file and n_rows")
        for i, rec in enumerate(reader):
            f = rec["file"] or ""
            try:
                idx = int(f) if f.isdigit() else int(Path(f).name.split("-")[1])
                n = int(rec["n_rows"] or "")
            except (ValueError, IndexError):
                raise ConfigError(
                    "source.manifest",
                    f"{path}, row {i}: cannot read file {f!r} / n_rows {rec['n_rows']!r}",
                ) from None
            if n < 0:
                raise ConfigError("source.manifest", f"{path}, row {i}: n_rows {n} is negative")
            if idx in rows:
                raise ConfigError(
                    "source.manifest", f"{path}, row {i}: file {idx} is listed a second time"
                )
            rows[idx] = n
    return rows


def plan_manifest(config: dict) -> str | None:
    """The manifest the plan reads: ``source.manifest``, else (hub and stream sources) the hub
    manifest of the revision when ``snakemake manifest`` has written it, else None."""
    src = config["source"]
    if src["manifest"]:
        return src["manifest"]
    if src["kind"] in ("hub", "stream"):
        path = hub_manifest_path(src["hub"]["download_dir"], src["hub"]["revision"])
        if Path(path).is_file():
            return path
    return None


def _stream_plan(config: dict) -> Plan:
    """source.kind stream: one "file" (a local Parquet chunk a stream job writes) per chunk of
    the row range, one shard each; metadata from the hub downloads."""
    src, hub = config["source"], config["source"]["hub"]
    with config_keys(start="source.stream.start", n_cells="source.stream.n_cells"):
        chunks = plan_chunks(
            src["stream"]["start"], src["stream"]["n_cells"], src["cells_per_shard"]
        )
    paths = tuple(chunk_path(hub["revision"], a, b) for a, b in chunks)
    shards = [Shard(f"{i:05d}", i, 0, None, file_rows=b - a) for i, (a, b) in enumerate(chunks)]
    root = f"{hub['download_dir']}/{hub['revision']}"
    return Plan(
        "stream", len(chunks), list(range(len(chunks))), {s.name: s for s in shards}, root, paths,
        plan_manifest(config),
    )  # fmt: skip


def make_plan(config: dict) -> Plan:
    src = config["source"]
    kind = src["kind"]
    if kind == "stream":
        return _stream_plan(config)
    if kind == "obs":  # no expression files: no shards; metadata downloads as for the hub
        root = f"{src['hub']['download_dir']}/{src['hub']['revision']}"
        return Plan(kind, 0, [], {}, root)
    if kind == "demo":
        n_total = config["demo"]["n_files"]
        root = f"{RESULTS}/demo"
        rows: dict[int, int] | int = config["demo"]["cells_per_file"]
    elif kind == "hub":
        n_total = src["hub"]["n_files_total"]
        root = f"{src['hub']['download_dir']}/{src['hub']['revision']}"
        rows = src["rows_per_file"]
    elif kind == "h5ad":
        from tahoeflow.sources.h5ad import h5ad_n_obs

        settings = h5ad_settings(src["h5ad"])
        n_total = len(settings.paths)
        root = f"{RESULTS}/h5ad"
        # A user's file: its exact row count from the header (None while it is missing: one
        # shard reads it to the end). A prepared file does not exist at the first parse: its
        # plan uses the nominal source.rows_per_file, before and after it exists, so the plan
        # stays the same and a finished run is not replanned.
        rows = {
            i: src["rows_per_file"]
            if settings.prepare_kind
            else (h5ad_n_obs(p, settings.layer) if Path(p).exists() else None)
            for i, p in enumerate(settings.paths)
        }
        with config_keys(spec="source.files", files="source.files"):
            files = parse_file_selection(src["files"], n_total)
            shards = plan_shards(files, src["cells_per_shard"], rows)
        return Plan(kind, n_total, files, {s.name: s for s in shards}, root, tuple(settings.paths))
    else:
        n_total = src["local"]["n_files_total"]
        root = str(src["local"]["path"]).rstrip("/")
        rows = src["rows_per_file"]
    with config_keys(spec="source.files"):
        files = parse_file_selection(src["files"], n_total)
    manifest_path = plan_manifest(config)
    wanted = config.get("filters", {}).get("plates") or []
    exact: dict[int, int] = {}
    plates = None
    if manifest_path:
        manifest = read_manifest(manifest_path)
        plates = read_plates(manifest_path)
        if wanted and plates is not None:  # only the files that may hold a wanted plate
            with config_keys(wanted="filters.plates"):
                files = select_by_plate(files, plates, wanted, manifest_path)
        missing = [f for f in files if f not in manifest]
        if missing and src["cells_per_shard"]:
            raise ConfigError("source.manifest", f"has no row count for file {missing[0]}")
        rows = {f: manifest.get(f, src["rows_per_file"]) for f in files}
        exact = {f: manifest[f] for f in files if f in manifest}
    if wanted and plates is None and kind == "hub":
        warnings.warn(
            f"config key 'filters.plates': no plate manifest "
            f"({hub_manifest_path(src['hub']['download_dir'], src['hub']['revision'])}), so all "
            f"{len(files)} file(s) of source.files are planned; run `snakemake manifest` first "
            "to plan only the files that hold these plates",
            stacklevel=1,  # shown as from this module: Snakemake hides warnings of the Snakefile
        )
    with config_keys(files="source.files"):
        shards = plan_shards(files, src["cells_per_shard"], rows)
    # each shard carries its file's manifest row count; the reader checks it against the footer
    shards = [replace(s, file_rows=exact.get(s.file_index)) for s in shards]
    return Plan(kind, n_total, files, {s.name: s for s in shards}, root, (), manifest_path)
