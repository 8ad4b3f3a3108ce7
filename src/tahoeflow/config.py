"""Config validation (JSON Schema + cross-key checks) and the static shard plan.

Used by ``rules/common.smk`` at parse time. Cheap: it never opens a data file (a manifest,
when given, is a small TSV of file names and row counts).
"""

from __future__ import annotations

import copy
import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError
from .schema import data_filename, metadata_filename
from .shards import Shard, parse_file_selection, plan_shards

METADATA_KINDS = ("gene", "sample", "drug", "cell_line")


def _fill_defaults(schema: dict, node: Any) -> Any:
    """Insert schema defaults for missing keys, recursively (objects only)."""
    if schema.get("type") != "object" or not isinstance(node, dict):
        return node
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            node[key] = _fill_defaults(sub, node[key])
    return node


def _key_of(error: jsonschema.ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join(path + [extra[0]]) if extra else ".".join(path)
    return ".".join(path) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return "unknown key (see config/schema.yaml for the valid keys)"
    if error.validator == "type":
        return f"{error.instance!r} should be of type {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{error.instance!r} is out of range ({error.validator} {error.validator_value})"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    return error.message


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate ``config`` against the schema, fill defaults, and check cross-key rules.

    Raises :class:`ConfigError` naming the first offending key. Returns the filled config
    (the same dict object, updated in place, so Snakemake's ``config`` sees the defaults).
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        e = errors[0]
        raise ConfigError(_key_of(e), _message(e))
    _fill_defaults(schema, config)
    _cross_checks(config)
    return config


def _cross_checks(config: dict) -> None:
    emb = config["embed"]
    if emb["n_components"] > emb["hvg"]["n_top"]:
        raise ConfigError(
            "embed.n_components",
            f"{emb['n_components']} components need at least as many HVGs (embed.hvg.n_top is {emb['hvg']['n_top']})",
        )
    src = config["source"]
    if src["kind"] == "local" and not src["local"]["path"]:
        raise ConfigError("source.local.path", "is required when source.kind is local")
    if src["kind"] == "hub" and src["hub"]["revision"] == "main":
        warnings.warn(
            "config key 'source.hub.revision' is 'main': the data are not pinned; "
            "set a 40-hex commit id for reproducible runs",
            stacklevel=2,
        )


@dataclass(frozen=True)
class Plan:
    """Where each input lives and which shards exist, from the config alone."""

    kind: str
    n_files_total: int
    files: list[int]
    shards: dict[str, Shard]
    root: str  # directory holding data/ and metadata/
    paths: tuple[str, ...] = ()  # source.kind h5ad: the .h5ad files

    def data_path(self, file_index: int) -> str:
        if self.kind == "h5ad":
            return self.paths[file_index]
        return f"{self.root}/{data_filename(file_index, self.n_files_total)}"

    def metadata_path(self, kind: str) -> str:
        return f"{self.root}/{metadata_filename(kind)}"


def read_manifest(path: str | Path) -> dict[int, int]:
    """``file<TAB>n_rows`` rows -> {file index: rows}. ``file`` may be an index or a file name."""
    rows: dict[int, int] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or not {"file", "n_rows"} <= set(reader.fieldnames):
            raise ConfigError("source.manifest", f"{path} needs the columns file and n_rows")
        for i, rec in enumerate(reader):
            f = rec["file"]
            try:
                idx = int(f) if f.isdigit() else int(Path(f).name.split("-")[1])
                rows[idx] = int(rec["n_rows"])
            except (ValueError, IndexError):
                raise ConfigError(
                    "source.manifest",
                    f"{path}, row {i}: cannot read file {f!r} / n_rows {rec['n_rows']!r}",
                ) from None
    return rows


def make_plan(config: dict) -> Plan:
    src = config["source"]
    kind = src["kind"]
    if kind == "demo":
        n_total = config["demo"]["n_files"]
        root = "results/demo"
        rows: dict[int, int] | int = config["demo"]["cells_per_file"]
    elif kind == "hub":
        n_total = src["hub"]["n_files_total"]
        root = f"{src['hub']['download_dir']}/{src['hub']['revision']}"
        rows = src["rows_per_file"]
    elif kind == "h5ad":
        from .h5ad_source import h5ad_n_obs, settings_from_config

        settings = settings_from_config(src["h5ad"])
        n_total = len(settings.paths)
        root = "results/h5ad"
        # exact row counts from the files' headers when they exist (a prepared file does not yet)
        rows = {
            i: h5ad_n_obs(p, settings.layer) if Path(p).exists() else src["rows_per_file"]
            for i, p in enumerate(settings.paths)
        }
        files = parse_file_selection(src["files"], n_total)
        shards = plan_shards(files, src["cells_per_shard"], rows)
        return Plan(kind, n_total, files, {s.name: s for s in shards}, root, tuple(settings.paths))
    else:
        n_total = src["local"]["n_files_total"]
        root = str(src["local"]["path"]).rstrip("/")
        rows = src["rows_per_file"]
    files = parse_file_selection(src["files"], n_total)
    if src["manifest"]:
        manifest = read_manifest(src["manifest"])
        missing = [f for f in files if f not in manifest]
        if missing and src["cells_per_shard"]:
            raise ConfigError("source.manifest", f"has no row count for file {missing[0]}")
        rows = {f: manifest.get(f, src["rows_per_file"]) for f in files}
    shards = plan_shards(files, src["cells_per_shard"], rows)
    return Plan(kind, n_total, files, {s.name: s for s in shards}, root)
