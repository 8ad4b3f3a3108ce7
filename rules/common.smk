# Config validation, the static shard plan and path helpers. Evaluated at parse time: it
# never opens a data file, so a dry run over thousands of shards stays fast.
import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from snakemake.exceptions import WorkflowError

_SRC = str(Path(workflow.basedir) / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
# Scripts run in their own Python processes (locally, in conda envs, on cluster nodes): let
# them import the same package from this checkout. The workflow sets this variable itself; it
# is not a setting the user has to provide.
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")]))
)

from tahoeflow.config import (
    METADATA_KINDS,
    check_config_files,
    coerce_cli_values,
    make_plan,
    validate_config,
)
from tahoeflow.sources.h5ad_settings import prepared_path
from tahoeflow.provenance import code_digest
from tahoeflow.errors import ConfigError
from tahoeflow.io import RESULTS
from tahoeflow.cells.plan import plan_batches, plan_merge_tree, plan_summary_groups
from tahoeflow.merge.pseudobulk import largest_line_rows
from tahoeflow.models.checks import forest_nbytes_bound

_SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"
try:
    # The files Snakemake loaded (--configfile ones and the Snakefile's), re-read strictly:
    # YAML 1.1 turns an unquoted 2:5 into 125 and silently drops a repeated key.
    check_config_files(workflow.configfiles)
    # --config embed='{n_components: 30}' arrives as strings ('30'): give them the schema's type.
    coerce_cli_values(config, workflow.config_settings.config, _SCHEMA)
    validate_config(config, _SCHEMA)
    PLAN = make_plan(config)
except ConfigError as e:
    raise WorkflowError(f"Invalid configuration: {e}")

SHARDS = PLAN.shards
# The embedding passes run one job per group of shards (embed.shards_per_job; null: 4, or
# more so that a pass has at most 256 jobs).
_PER_EMBED = config["embed"]["shards_per_job"] or max(4, -(-len(SHARDS) // 256))
BATCHES = plan_batches(SHARDS, _PER_EMBED)
# One summary job per group of shards (summarize.shards_per_job; null: at most 256 jobs).
_PER_SUMMARY = config["summarize"]["shards_per_job"] or max(1, -(-len(SHARDS) // 256))
GROUPS = plan_summary_groups(SHARDS, _PER_SUMMARY)
# The merges read at most merge.fan_in inputs a job: partial merges (results/merged/parts/)
# of fan_in summary groups, then of fan_in partials, ...; MERGE_TOP is what the final merges
# read (the groups themselves when there are at most fan_in).
MERGE_NODES, MERGE_TOP = plan_merge_tree(GROUPS, config["merge"]["fan_in"])
R = RESULTS  # every output lies under it (tahoeflow.io.RESULTS)


def untracked(value):
    """A params value Snakemake does not compare between runs (it leaves out params computed
    from a job's files): for settings that cannot change an output, such as a download's
    timeout, so that changing them does not redo finished work."""
    return lambda wildcards, output: value


def group_shards(wildcards):
    """The shards of a summary group (in order) as Shard records."""
    return [SHARDS[name] for name in GROUPS[wildcards.group]]


def group_data(wildcards):
    """The data files of a summary group's shards, one entry per shard."""
    return [PLAN.data_path(s.file_index) for s in group_shards(wildcards)]


def raw_meta(kind):
    return PLAN.metadata_path(kind)


def shard_outputs(name):
    """The file ``name`` of every summary group (results/shards/<group>/), in shard order."""
    return expand(f"{R}/shards/{{group}}/{name}", group=sorted(GROUPS))


def _share_mb(shard, size):
    """The part of a file of ``size`` MB that a shard reads (row-range shards read a fraction)."""
    if shard.row_stop is None and shard.row_start == 0:
        return size
    rows = (
        config["demo"]["cells_per_file"]
        if PLAN.kind == "demo"
        else config["source"]["rows_per_file"]
    )
    return size * min(1.0, config["source"]["cells_per_shard"] / max(rows, 1))


def merge_part(name, child):
    """The file ``name`` of a merge input ``child``: a summary group's or a partial merge's."""
    if child in GROUPS:
        return f"{R}/shards/{child}/{name}"
    return f"{R}/merged/parts/{child}/{name}"


def merge_part_inputs(shard_name, part_name=None):
    """Input function of a partial merge: its children's files (``shard_name`` of summary
    groups at level 1, ``part_name`` of the partials below above)."""

    def inputs(wildcards):
        return [
            merge_part(shard_name if c in GROUPS else (part_name or shard_name), c)
            for c in MERGE_NODES[wildcards.node]
        ]

    return inputs


def merge_top_inputs(shard_name, part_name=None):
    """What a final merge reads: the top partials' files, or every group's without partials."""
    return [
        merge_part(shard_name if c in GROUPS else (part_name or shard_name), c)
        for c in MERGE_TOP
    ]


def merge_cells_part_inputs(wildcards):
    """A level-1 partial reads its groups' cells; a higher one its children's partials."""
    children = MERGE_NODES[wildcards.node]
    if children[0] in GROUPS:
        return {"cells": [merge_part("cells.parquet", c) for c in children]}
    return {
        "sums": [merge_part("control_sums.parquet", c) for c in children],
        "ids": [merge_part("cell_ids.npy", c) for c in children],
    }


def merge_top_parts(name):
    """The top partials' ``name`` files; none when the final merge reads the groups."""
    return [f"{R}/merged/parts/{n}/{name}" for n in MERGE_TOP if n not in GROUPS]


def merge_part_indices(wildcards):
    """Positions (in sorted order) of a level-1 partial's groups (none for higher levels)."""
    order = {name: i for i, name in enumerate(sorted(GROUPS))}
    return [order[c] for c in MERGE_NODES[wildcards.node] if c in order]


def input_mean_mb(wildcards, input):
    """MB of one input file on average (merges that hold one input's table at a time)."""
    return input.size_mb / max(len(input), 1)


def group_size_mb(wildcards, input):
    """(largest shard, all shards) of a summary group: MB of their shares of their files."""
    sizes = [
        _share_mb(s, Path(p).stat().st_size / 2**20)
        for s, p in zip(group_shards(wildcards), as_list(input.data))
    ]
    return max(sizes), sum(sizes)


def largest_in_group_mb(wildcards, input):
    """A summary group's shards are read one at a time: the largest shard's MB."""
    return group_size_mb(wildcards, input)[0]


def shard_record(shard):
    """A shard as a plain dict (name, file, row range) for params: Snakemake records plain values
    only, so a change of a shard's row range reruns its jobs. Its file's row count from a
    manifest (file_rows) is left out: it only checks the footer and cannot change an output, so
    building a manifest later reruns nothing (summarize_shard gets it as params.file_rows).
    """
    record = dataclasses.asdict(shard)
    record.pop("file_rows", None)
    return record


def batch_shards(wildcards):
    """The shards of a group (in order) as Shard records."""
    return [SHARDS[name] for name in BATCHES[wildcards.batch]]


def batch_data(wildcards):
    """The data files of a group's shards, one entry per shard (aligned with batch_shards)."""
    return [PLAN.data_path(s.file_index) for s in batch_shards(wildcards)]


def as_list(paths):
    """A named input that may hold one path or several, as a list."""
    return [paths] if isinstance(paths, str) else list(paths)


def batch_size_mb(wildcards, input):
    """(largest shard, all shards) of a group, in MB of input."""
    sizes = [
        _share_mb(s, Path(p).stat().st_size / 2**20)
        for s, p in zip(batch_shards(wildcards), as_list(input.data))
    ]
    return max(sizes), sum(sizes)


def largest_cache_shard_mb(wildcards, input):
    """MB of the largest shard (row group) of a group's HVG cache, uncompressed: what a
    projection job holds at once, as Arrow columns and then CSR."""
    Path(input.cache).stat()  # a missing input: the request is made once it exists
    meta = pq.ParquetFile(input.cache).metadata
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    return max(sizes, default=0) / 2**20


def forest_mb(wildcards, input):
    """MB a classifier forest fitted on the model sample can reach: forest_nbytes_bound with
    models.rf's trees, rows per tree and max_leaf_nodes, over all the sample's rows and cell
    lines (a bound for the forest on its training split and for split_comparison's re-splits).
    """
    Path(input.sample).stat()  # a missing input: the request is made once it exists
    rf = config["models"]["rf"]
    lines = pq.read_table(input.sample, columns=["cell_line_id"]).column(0)
    n_bytes = forest_nbytes_bound(
        rf["n_estimators"], len(lines), rf["max_samples"], rf["max_leaf_nodes"],
        len(pc.unique(lines)),
    )  # fmt: skip
    return n_bytes / 2**20


def with_forest_mb(per_input_mb):
    """A size for mem_mb: per_input_mb x the job's input MB plus the forest's bound."""

    def size(wildcards, input):
        return per_input_mb * input_mb(wildcards, input) + forest_mb(wildcards, input)

    return size


# Memory requests. A job's mem_mb is the whole job as sbatch --mem counts it (the sum over its
# processes): on SLURM the job step runs a Snakemake process (executor slurm-jobstep), which
# runs `srun ... snakemake` (a second Snakemake process, executor local) and that one the
# rule's script. benchmarks/bench_memory.py measures every rule at hub-sized files (RESULTS.md
# P8): each Snakemake process peaks at ~260 MB (4 shards; ~270 MB for one job of the 3,388-file
# plan, so 3 MB more per 1,000 shards is allowed), srun at ~10 MB. Each rule states its script's
# peak as (MB) base + per_mb x the MB of input the job reads, fitted to the measurements at
# 1,000 and 28,225 cells per file; the request is MEM_MARGIN x the sum, and half as much again
# per retry (attempt 2, 3, ...).
SNAKEMAKE_MB = 360
SRUN_MB = 20
MEM_MARGIN = 1.3


def job_mem_mb(script_mb, attempt=1):
    """mem_mb of a job whose script peaks at ``script_mb`` MB (Snakemake x 2 and srun added)."""
    overhead = 2 * (SNAKEMAKE_MB + 3 * len(SHARDS) // 1000) + SRUN_MB
    return int((overhead + script_mb) * MEM_MARGIN * (1 + 0.5 * (attempt - 1)))


def input_mb(wildcards, input):
    """MB of all the job's input files."""
    return input.size_mb


def mem_mb(base, slope=0.0, size=input_mb):
    """A mem_mb callable for ``resources``, the one place retries scale a request: the script
    peaks at ``base`` + ``slope`` x ``size(wildcards, input)`` MB (default size: the MB of all
    input files; a size may also count rows or cells)."""
    if not slope:  # known before the inputs exist (a dry run shows it)
        return lambda wildcards, attempt: job_mem_mb(base, attempt)

    def request(wildcards, input, attempt):
        return job_mem_mb(base + slope * size(wildcards, input), attempt)

    return request


# The final pseudobulk merge over partials (one cell line per row group) holds one line's rows
# at a time, and streams the merged cells: the whole-layout rehearsal peaked at 746 MB with
# 4.31M rows in its largest line, bench_pseudobulk_merge.py at 354 MB with 1M (RESULTS.md).
LINE_MERGE_BASE_MB = 350
LINE_MERGE_MB_PER_MROWS = 110


def pseudobulk_merge_mb(wildcards, input):
    """MB the merge_pseudobulk script peaks at: over partials, by the largest cell line's rows;
    over shard tables (at most merge.fan_in of them, merged whole), 450 + 15 x input MB.
    """
    for p in input.pseudobulk:
        Path(p).stat()  # a missing input: the request is made once it exists
    rows = largest_line_rows(input.pseudobulk)
    if rows is None:
        return 450 + 15 * input_mb(wildcards, input)
    return LINE_MERGE_BASE_MB + LINE_MERGE_MB_PER_MROWS * rows / 1e6


def signature_mb(wildcards, input):
    """MB the landscape holds beyond its base: the drug signatures (keys x genes, at most one
    per topTable row) with their compensations and the output (3 float64 copies), and one
    batch of topTable rows (~100 MB). A missing topTable defers the request until it exists.
    """
    if not input.toptable:
        return 0
    top = input.toptable[0]
    Path(top).stat()
    rows = pq.ParquetFile(top).metadata.num_rows
    return 24 * rows / 2**20 + 100


def updown_held_mb(wildcards, input):
    """MB of topTable the updown job holds: a Parquet one is streamed (one batch of rows and
    the updown.max_rows sample at a time; all rows with max_rows null), other formats whole.
    """
    # imported here, not at parse time: the module loads scikit-learn
    from tahoeflow.de.updown import TOPTABLE_BATCH_ROWS

    path = str(input.toptable)
    Path(path).stat()  # a missing input: the request is made once it exists
    if not path.lower().endswith((".parquet", ".pq")):
        return input.size_mb
    rows = pq.ParquetFile(path).metadata.num_rows
    held = (
        rows
        if not config["updown"]["max_rows"]
        else TOPTABLE_BATCH_ROWS + config["updown"]["max_rows"]
    )
    return input.size_mb * min(1.0, held / max(rows, 1))


def stream_rows(wildcards, input):
    """Rows a stream chunk downloads (its wildcards' range)."""
    return int(wildcards.stop) - int(wildcards.start)


def embeddings_held_mb(wildcards, input):
    """MB the embeddings job holds at once: all of its input up to embed.kmeans.max_fit_cells
    cells, then the sample (about 100 input bytes per cell: PCs and ids) and one batch.
    """
    cap = config["embed"]["kmeans"]["max_fit_cells"]
    n_cells = max(planned_cells(), 1)
    if cap is None or n_cells <= cap:
        return input.size_mb
    per_cell = input.size_mb / n_cells
    largest = max(Path(p).stat().st_size for p in as_list(input.proj)) / 2**20
    return per_cell * cap + largest


def largest_shard_mb(wildcards, input):
    """A group's shards are read one at a time: the largest shard's MB."""
    return batch_size_mb(wildcards, input)[0]


def data_mb(wildcards, input):
    """MB of the job's data files (input ``data``)."""
    return sum(Path(p).stat().st_size for p in as_list(input.data)) / 2**20


def per_group_mb(wildcards, input):
    """MB of input per summary group (merges that hold one group's table at a time)."""
    return input.size_mb / max(len(GROUPS), 1)


# The summary job holds a shard's CSR (about 5x its Parquet size) and its summaries: 787 MB
# for a 78 MB, 28,225-cell file, 385 MB for 3 MB. A group's tables are streamed out shard by
# shard (its gene sums: 3 MB).
shard_mem_mb = mem_mb(560, 5.5, size=largest_in_group_mb)


def batch_runtime(wildcards, input):
    return 5 + int(batch_size_mb(wildcards, input)[1] / 10)


def cache_runtime(wildcards, input):
    """Minutes for a projection job: its HVG cache is ~1/15 of the group's data files."""
    return 5 + int(input.size_mb / 2)


def planned_cells():
    """Cells the shards read before the filters, from the plan alone (row ranges, the
    manifest's row counts, else the nominal rows per file): decides embed.csv_max_cells.
    """
    nominal = (
        config["demo"]["cells_per_file"]
        if PLAN.kind == "demo"
        else config["source"]["rows_per_file"]
    )
    return sum(
        (s.row_stop if s.row_stop is not None else (s.file_rows or nominal))
        - s.row_start
        for s in SHARDS.values()
    )


def per_cell_export_wanted(key):
    """A per-cell export (seed 002's embeddings CSV: embed.csv_max_cells; the embeddings h5ad:
    embed.h5ad_max_cells) is a target only up to that many planned cells."""
    cap = config["embed"][key]
    return cap is None or planned_cells() <= cap


def final_outputs():
    """Targets of the default run: the merged tables, plus every stage switched on in `stages`
    (source.kind obs: the phenotype tables only; it has no expression files)."""
    st = config["stages"]
    if PLAN.kind == "obs":
        return phenotype_outputs()
    out = [
        f"{R}/merged/cells.parquet",
        f"{R}/merged/gene_stats.parquet",
        f"{R}/merged/pseudobulk.parquet",
    ]
    if st["embed"]:
        out += [f"{R}/embed/embeddings.parquet", f"{R}/embed/pca_variance.csv"]
        if per_cell_export_wanted("csv_max_cells"):
            out.append(f"{R}/embed/embeddings.csv")
    if st["models"]:
        out += [
            f"{R}/features/X_train.npz",
            f"{R}/models/ridge/metrics.json",
            f"{R}/models/rf/metrics.json",
            f"{R}/models/baselines.csv",
            f"{R}/models/rf_regressor/metrics.json",
            f"{R}/models/split_comparison.csv",
        ]
    if st["report"] and st["embed"] and st["models"]:
        out.append(f"{R}/report/metrics_summary.csv")
    if st["de"]:
        out += [f"{R}/de/toptable.parquet", f"{R}/de/welch.parquet"]
    if st["updown"]:
        out.append(f"{R}/updown/scores.csv")
    if st["pergene"]:
        out += [f"{R}/pergene/metrics.csv", f"{R}/pergene/predictions.csv"]
    if st["anndata"]:
        out.append(f"{R}/anndata/pseudobulk.h5ad")
        if st["embed"] and per_cell_export_wanted("h5ad_max_cells"):
            out.append(f"{R}/anndata/embeddings.h5ad")
    if st["phenotypes"]:
        out += phenotype_outputs()
    return out


def phenotype_outputs():
    return [
        f"{R}/phenotypes/sensitivity.parquet",
        f"{R}/phenotypes/cell_cycle.parquet",
        f"{R}/phenotypes/landscape/metrics.json",
    ]


# What the per-shard scripts need to know about the source (tahoeflow.workflow_io reads it).
SOURCE = {
    "kind": PLAN.kind,
    "h5ad": config["source"]["h5ad"] if PLAN.kind == "h5ad" else None,
}
# The params of every job that reads shards (`params: **SHARD_READ`): it must see exactly the
# cells the summary job saw (tahoeflow.workflow_io.load_filtered_shard reads them).
SHARD_READ = dict(
    source=SOURCE,
    filters=config["filters"],
    normalised=config["input"]["normalised"],
    control_drug=config["control_drug"],
)


def sample_meta(wildcards=None):
    """sample_metadata.parquet (doses); h5ad files carry doses in obs instead; source.kind obs
    downloads it beside obs_metadata, and a local obs file (phenotypes.obs.path) comes without.
    """
    if PLAN.kind == "h5ad" or (
        PLAN.kind == "obs" and config["phenotypes"]["obs"]["path"]
    ):
        return []
    return [raw_meta("sample")]


# Tahoe-100M's real metadata tables (committed, revision 2dc57900b7981cfcf5e211527169a0b006546a95).
REAL_META_DIR = str(Path(workflow.basedir) / "resources" / "tahoe_metadata")


def drug_meta(wildcards=None):
    """drug_metadata.parquet (MoA labels of the landscape): the source's, or for a local obs file
    (source.kind obs with phenotypes.obs.path; no download) the committed copy of Tahoe's.
    """
    if PLAN.kind == "obs" and config["phenotypes"]["obs"]["path"]:
        return f"{REAL_META_DIR}/drug_metadata.parquet"
    return raw_meta("drug")


def first_shard():
    """The shard whose raw values feed the expression histogram of the report."""
    return SHARDS[sorted(SHARDS)[0]]


def demo_truth(wildcards):
    """The demo's ground truth (scores DE calls); nothing for real data."""
    return [f"{R}/demo/truth/effects.parquet"] if PLAN.kind == "demo" else []


def updown_input(wildcards):
    """A topTable from elsewhere (updown.toptable) or the workflow's own."""
    return config["updown"]["toptable"] or f"{R}/de/toptable.parquet"


def pergene_inputs(wildcards):
    if config["pergene"]["mode"] == "table":
        return {"table": config["pergene"]["table"]["path"]}
    return {
        "counts": f"{R}/merged/pseudobulk.parquet",
        "groups": f"{R}/merged/pseudobulk_groups.parquet",
        "hvg": f"{R}/embed/hvg.parquet",
        "drugs": raw_meta("drug"),
    }


def obs_hub_path():
    """Where the hub's obs_metadata.parquet is downloaded (source.hub: folder and revision)."""
    hub = config["source"]["hub"]
    return f"{hub['download_dir']}/{hub['revision']}/metadata/obs_metadata.parquet"


def phenotype_count_inputs(wildcards):
    """The cells to count for the sensitivity table: the merged cells, or Tahoe's obs_metadata
    (phenotypes.obs.path, else the hub download); and sample_metadata's wells (to report the
    wells without cells; an h5ad source has none)."""
    if config["phenotypes"]["sensitivity"]["from"] == "obs":
        cells = config["phenotypes"]["obs"]["path"] or obs_hub_path()
    else:
        cells = f"{R}/merged/cells.parquet"
    return {"cells": cells, "samples": sample_meta()}


def merged_cells_mb(wildcards, input):
    """MB of the merged cells counted (0 for obs metadata: its batches bound the memory)."""
    if config["phenotypes"]["sensitivity"]["from"] == "obs":
        return 0
    return Path(input.cells).stat().st_size / 2**20


def pergene_apply_input(wildcards):
    """New feature table to predict (pergene.apply_table), default the fitted features."""
    return config["pergene"]["apply_table"] or f"{R}/pergene/features.parquet"


def cell_cycle_inputs(wildcards):
    """The workflow's per-cell scores, or with phenotypes.sensitivity.from: obs the phases that
    Tahoe's obs_metadata carries (every cell of the atlas; not recomputed)."""
    if config["phenotypes"]["sensitivity"]["from"] == "obs":
        return {"obs": config["phenotypes"]["obs"]["path"] or obs_hub_path()}
    return {
        "scores": expand(
            f"{R}/phenotypes/cell_cycle/scores/{{batch}}.parquet", batch=sorted(BATCHES)
        ),
        "draw": rules.cell_cycle_genes.output[0],
    }


def landscape_toptable(wildcards):
    """The workflow's topTable when the DE stage runs (else the embedding says why not)."""
    return (
        [f"{R}/de/toptable.parquet"]
        if config["stages"]["de"] and PLAN.kind != "obs"
        else []
    )


def landscape_no_toptable():
    """Why the landscape has no DE signatures when landscape_toptable is empty."""
    if PLAN.kind == "obs":
        return "source.kind obs has no expression files: no pseudobulk logFC signatures"
    return "stages.de is off: no pseudobulk logFC signatures"


def user_inputs():
    """(config key, path) of every file or folder the config names as the user's input."""
    src = config["source"]
    out = []
    if PLAN.kind == "local":
        out.append(("source.local.path", PLAN.root))
        out += [("source.local.path", PLAN.data_path(f)) for f in PLAN.files]
        out += [("source.local.path", PLAN.metadata_path(k)) for k in METADATA_KINDS]
    if PLAN.kind == "h5ad":
        prepare = src["h5ad"].get("prepare") or {}
        if prepare:
            out.append(("source.h5ad.prepare.input", prepare["input"]))
        else:
            out += [("source.h5ad.paths", p) for p in PLAN.paths]
    out.append(("source.manifest", src["manifest"]))
    out.append(("updown.toptable", config["updown"]["toptable"]))
    out.append(("pergene.apply_table", config["pergene"]["apply_table"]))
    if config["pergene"]["mode"] == "table":
        out.append(("pergene.table.path", config["pergene"]["table"]["path"]))
    if config["phenotypes"]["sensitivity"]["from"] == "obs":
        out.append(("phenotypes.obs.path", config["phenotypes"]["obs"]["path"]))
    return [(k, p) for k, p in out if p]


def check_user_inputs(rules):
    """Fail at parse time when a config key names, as an input, a path a rule writes or a path
    inside the workflow's output folders (Snakemake deletes a rule's outputs before rerunning
    it, so such an input could be lost)."""
    owned = [R]
    if PLAN.kind in ("hub", "stream"):
        owned.append(PLAN.root)
    owned = [os.path.normpath(o) for o in owned]
    for key, path in user_inputs():
        rel = os.path.relpath(os.path.abspath(path))
        producer = next((r.name for r in rules if r.is_producer(rel)), None)
        inside = [o for o in owned if rel == o or rel.startswith(o + os.sep)]
        if producer:
            problem = f"{path} is written by rule {producer}; an input must not be a rule's output"
        elif inside:
            problem = f"{path} lies in the workflow's output folder {inside[0]}/; keep inputs outside it"
        else:
            continue
        raise WorkflowError(f"Invalid configuration: config key '{key}': {problem}")


def record_code(rules):
    """Give each script-running rule the param ``code`` (the digest of its script and of the package
    modules the script imports). Snakemake records params, so an edit of the library reruns
    exactly the rules that run the edited code (it tracks only the script files itself).
    """
    scripts = Path(workflow.basedir) / "workflow" / "scripts"
    package = Path(_SRC) / "tahoeflow"
    for r in rules:
        if r.script:
            r.set_params(code=code_digest(scripts / Path(r.script).name, package))
