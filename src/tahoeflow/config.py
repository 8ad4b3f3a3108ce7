"""Config validation (JSON Schema + cross-key checks) and the static shard plan.

Used by ``rules/common.smk`` at parse time. Cheap: it never opens a data file (a manifest,
when given, is a small TSV of file names and row counts).
"""

from __future__ import annotations

import copy
import csv
import difflib
import json
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tahoeflow.cells.doses import dose_unit_problem
from tahoeflow.cells.plan import Shard, parse_file_selection, plan_shards
from tahoeflow.errors import ConfigError, config_keys
from tahoeflow.io import RESULTS
from tahoeflow.sources.h5ad_settings import (
    PREPARE_KINDS,
    H5adSettings,
    obs_map_problem,
    prepared_path,
)
from tahoeflow.sources.manifest import hub_manifest_path, read_plates, select_by_plate
from tahoeflow.sources.stream import chunk_path, plan_chunks
from tahoeflow.sources.tahoe import data_filename, metadata_filename

METADATA_KINDS = ("gene", "sample", "drug", "cell_line")


# --- strict re-read of the config files ------------------------------------------------------
class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1, what Snakemake reads config files with), used only to
    compose the node tree that :func:`check_config_file` inspects for YAML 1.1 traps."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _node_key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _check_node(node: yaml.Node, path: list[str], where: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias seen before (or a recursive structure)
        return
    seen.add(id(node))
    key = ".".join(path) or "(top level)"
    if isinstance(node, yaml.ScalarNode):
        if node.tag in _NUMBER_TAGS and node.style is None and ":" in node.value:
            loader = StrictLoader("")
            value = (
                loader.construct_yaml_int(node)
                if node.tag.endswith(":int")
                else loader.construct_yaml_float(node)
            )
            raise ConfigError(
                key,
                f"`{node.value}` in {where}, line {node.start_mark.line + 1} is read by YAML as "
                f'the base-60 number {value}; quote it ("{node.value}")',
            )
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_node(item, path, where, seen)  # list items are reported under the list's key
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, _v in node.value:
            name = _node_key(k)
            line = k.start_mark.line + 1
            if name == "<<":  # a YAML merge key may repeat
                continue
            if name in first:
                raise ConfigError(
                    ".".join([*path, name]),
                    f"is given twice in {where} (lines {first[name]} and {line}); "
                    "YAML would silently keep only the last one",
                )
            first[name] = line
        for k, v in node.value:
            _check_node(v, [*path, _node_key(k)], where, seen)


def _no_duplicate_pairs(where: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(
                    str(k), f"is given twice in one object of {where}; JSON keeps only the last one"
                )
            out[k] = v
        return out

    return hook


def check_config_file(path: str | Path) -> None:
    """Re-read a config file Snakemake loaded and reject what YAML 1.1 silently changes.

    Snakemake reads config files with PyYAML (YAML 1.1), where an unquoted ``2:5`` is the
    base-60 integer 125 and a repeated key silently replaces the first. Raises
    :class:`ConfigError` naming the key, file and line for (a) an unquoted integer or float in
    sexagesimal form and (b) a key given twice in one mapping. A file that is valid JSON is
    checked for repeated keys only (JSON has no base-60 numbers).
    """
    text = Path(path).read_text(encoding="utf-8")
    where = str(path)
    try:
        json.loads(text, object_pairs_hook=_no_duplicate_pairs(where))
        return
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
    try:
        root = yaml.compose(text, Loader=StrictLoader)
    except yaml.YAMLError:  # Snakemake read it; leave the syntax to its message
        return
    if root is not None:
        _check_node(root, [], where, set())


def check_config_files(paths: Iterable[str | Path]) -> None:
    """:func:`check_config_file` on each existing file of ``paths`` (once each)."""
    done: set[str] = set()
    for p in paths:
        key = str(Path(p).absolute())
        if key not in done and Path(p).is_file():
            done.add(key)
            check_config_file(p)


# --- values given with `snakemake --config` --------------------------------------------------
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE, _FALSE, _NULL = (
    ("true", "True", "TRUE"),
    ("false", "False", "FALSE"),
    ("null", "Null", "NULL", "~"),
)


def _cli_scalar(text: str, types: list[str]) -> Any:
    """``text`` as the first of ``types`` it spells unambiguously; else ``text`` unchanged."""
    s = text.strip()
    for t in types:
        if t == "integer" and _INT.fullmatch(s):
            return int(s)
        if t == "number" and (_INT.fullmatch(s) or _FLOAT.fullmatch(s)):
            return int(s) if _INT.fullmatch(s) else float(s)
        if t == "boolean" and s in _TRUE + _FALSE:
            return s in _TRUE
        if t == "null" and s in _NULL:
            return None
    return text


def _coerce(schema: Mapping, value: Any, cli: Any) -> Any:
    """``value`` with the strings that came from ``cli`` converted to the schema's type."""
    if isinstance(cli, dict) and isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k in cli:
            if k in value:
                sub = props.get(k, extra if isinstance(extra, Mapping) else {})
                value[k] = _coerce(sub, value[k], cli[k])
        return value
    if isinstance(cli, list) and isinstance(value, list) and value == cli:
        items = schema.get("items", {})
        return [_coerce(items, v, v) for v in value]
    if isinstance(value, str) and value == cli:
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if schema.get("x-cli-parse"):  # e.g. grid candidates: numbers, booleans, null or text
            return _cli_scalar(value, ["integer", "number", "boolean", "null"])
        if "string" in types or not types:  # a string is valid, or the type is not fixed
            return value
        return _cli_scalar(value, types)
    return value


def coerce_cli_values(config: dict, cli_config: Mapping, schema_path: str | Path) -> dict:
    """Give the values set with ``snakemake --config`` the schema's types (in place).

    Snakemake parses a nested value (``--config embed='{n_components: 30}'``) with YAML's
    BaseLoader, so every scalar inside it is a string (``'30'``). Where the schema key is an
    integer, number, boolean or null and the string spells one unambiguously (``30``, ``0.5``,
    ``true``, ``null``), it becomes that value; keys that accept a string are left alone.
    Only paths present in ``cli_config`` are touched (a quoted value in a config file stays a
    string, and the schema reports it).
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    _coerce(schema, config, _plain(cli_config))
    return config


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    return node


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


def _empty_sections_to_mappings(schema: dict, node: Any) -> None:
    """A section written with all its keys commented out (``hub:``) is null in YAML: make it
    ``{}`` so it takes the defaults (only for keys whose type is exactly ``object``)."""
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key in node and node[key] is None and sub.get("type") == "object":
            node[key] = {}
        if key in node:
            _empty_sections_to_mappings(sub, node[key])


def _unknown_keys(error: jsonschema.ValidationError) -> list[str]:
    return sorted(set(error.instance) - set(error.schema.get("properties", {})))


def _key_of(error: jsonschema.ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = _unknown_keys(error)
        return ".".join(path + [extra[0]]) if extra else ".".join(path)
    return ".".join(path) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        extra = _unknown_keys(error)
        close = difflib.get_close_matches(
            str(extra[0]) if extra else "", list(error.schema.get("properties", {})), n=1
        )
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key ({hint}see config/schema.yaml for the valid keys)"
    if error.validator == "type":
        text = f"{error.instance!r} should be of type {error.validator_value}"
        if isinstance(error.instance, bool) and "boolean" not in str(error.validator_value):
            text += (
                " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the value,"
                ' e.g. "no")'
            )
        return text
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
    _empty_sections_to_mappings(schema, config)
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
    _check_hub(src["hub"])
    if src["kind"] == "local" and not src["local"]["path"]:
        raise ConfigError("source.local.path", "is required when source.kind is local")
    _check_obs_source(config)
    _check_sources(config)
    _check_models(config)
    downloads = src["kind"] in ("hub", "stream") or (
        config["phenotypes"]["sensitivity"]["from"] == "obs"
        and not config["phenotypes"]["obs"]["path"]
    )
    if downloads and src["hub"]["revision"] == "main":
        warnings.warn(
            "config key 'source.hub.revision' is 'main': the data are not pinned; "
            "set a 40-hex commit id for reproducible runs",
            stacklevel=2,
        )


# Stages that read expression: source.kind obs has none, so rule all leaves them out.
EXPRESSION_STAGES = ("embed", "models", "de", "updown", "pergene", "anndata", "report")


def _check_obs_source(config: dict) -> None:
    """Resolve ``phenotypes.sensitivity.from`` (null: obs with source.kind obs, else cells) and
    check source.kind obs: Tahoe's obs_metadata alone, so the phenotype tables are all it builds.

    Raises :class:`ConfigError` when source.kind obs is given ``from: cells`` (there are no
    merged cells) or ``stages.phenotypes: false`` (nothing would be built). Expression stages
    left on (config/config.yaml switches them all on) are not built; a one-line warning names
    them.
    """
    sens = config["phenotypes"]["sensitivity"]
    if config["source"]["kind"] != "obs":
        sens["from"] = sens["from"] or "cells"
        return
    if sens["from"] == "cells":
        raise ConfigError(
            "phenotypes.sensitivity.from",
            "is cells, but source.kind obs has no expression files and so no merged cells: "
            "set it to obs or null (null reads obs with source.kind obs)",
        )
    sens["from"] = "obs"
    if not config["stages"]["phenotypes"]:
        raise ConfigError(
            "stages.phenotypes",
            "is false, but source.kind obs builds only the phenotype tables: nothing to do",
        )
    on = [f"stages.{k}" for k in EXPRESSION_STAGES if config["stages"][k]]
    if on:
        warnings.warn(
            f"config keys {', '.join(on)}: source.kind obs has no expression files, so these "
            "stages are not built (rule all builds results/phenotypes/ only); set them to false "
            "to silence this",
            stacklevel=2,
        )


_HEX40 = re.compile(r"[0-9a-f]{40}")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\{}]")
_REPO_PART = re.compile(r"[A-Za-z0-9_.-]{1,96}")


def revision_problem(rev: str) -> str | None:
    """Why ``rev`` is neither a 40-hex commit id nor a branch/tag name git and the hub accept
    (``git check-ref-format`` rules), or None when it is fine. Braces are refused too: the
    revision is part of the download paths, which are Snakemake patterns."""
    if _HEX40.fullmatch(rev):
        return None
    bad = _BAD_REF_CHARS.search(rev)
    checks = [
        (not rev, "it is empty"),
        (bad is not None, f"it contains {bad.group(0)!r}" if bad else ""),
        (rev.startswith(("/", "-")), "it starts with '/' or '-'"),
        (rev.endswith(("/", ".")), "it ends with '/' or '.'"),
        ("//" in rev, "it contains '//'"),
        (".." in rev, "it contains '..'"),
        ("@{" in rev or rev == "@", "it contains '@{' or is '@'"),
        (
            any(c.startswith(".") or c.endswith(".lock") for c in rev.split("/")),
            "a '/'-separated part starts with '.' or ends with '.lock'",
        ),
    ]
    for failed, why in checks:
        if failed:
            return why
    return None


def _check_dir(key: str, value: str) -> None:
    if not value.strip():
        raise ConfigError(key, "is empty")
    bad = re.search(r"[\x00-\x1f\x7f{}]", value)
    if bad:
        raise ConfigError(key, f"{value!r} contains {bad.group(0)!r}")
    if ".." in Path(value).parts:
        raise ConfigError(
            key,
            f"{value!r} has a '..' part; give an absolute path to place files outside the "
            "working directory",
        )


def _check_hub(hub: dict) -> None:
    why = revision_problem(hub["revision"])
    if why:
        raise ConfigError(
            "source.hub.revision",
            f"{hub['revision']!r} is not a 40-hex commit id or a valid branch/tag name: {why}",
        )
    repo = hub["repo_id"]
    parts = repo.split("/")
    if (
        len(parts) != 2
        or not all(_REPO_PART.fullmatch(p) for p in parts)
        or any(p[0] in "-." or p[-1] in "-." for p in parts)
        or "--" in repo
        or ".." in repo
        or repo.endswith(".git")
    ):
        raise ConfigError(
            "source.hub.repo_id",
            f"{repo!r} is not 'owner/name' (each 1-96 of A-Z a-z 0-9 _ . -, not starting or "
            "ending with '-' or '.', no '--' or '..', not ending in '.git')",
        )
    for key in ("download_dir", "cache_dir"):
        _check_dir(f"source.hub.{key}", hub[key])


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


# --- checks: sources ---------------------------------------------------------------------------
H5AD_KEY = "source.h5ad"
H5AD_SETTINGS_KEYS = ("paths", "obs_map", "control_value", "layer", "dose_unit", "gene_id_column",
                      "gene_symbol_column", "mito_prefix", "prepare")  # fmt: skip


def _check_sources(config: dict) -> None:
    """Cross-key checks of the sources: the demo's sizes, and the h5ad section when used."""
    demo = config["demo"]
    if demo["genes_per_effect"] > demo["n_expressed_genes"]:
        raise ConfigError(
            "demo.genes_per_effect",
            f"{demo['genes_per_effect']} is more than demo.n_expressed_genes "
            f"({demo['n_expressed_genes']})",
        )
    if config["source"]["kind"] == "h5ad":
        h5ad_settings(config["source"]["h5ad"])


def h5ad_settings(section: Mapping[str, Any], key: str = H5AD_KEY) -> H5adSettings:
    """The ``source.h5ad`` section as :class:`~tahoeflow.sources.h5ad.H5adSettings`, checked;
    a :class:`ConfigError` names the key (``source.h5ad.<key>``)."""
    if not isinstance(section, Mapping):
        raise ConfigError(key, "must be a mapping")
    unknown = sorted(set(section) - set(H5AD_SETTINGS_KEYS))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(H5AD_SETTINGS_KEYS)})"
        )
    paths = section.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    prepare = section.get("prepare") or {}
    if not isinstance(prepare, Mapping) or set(prepare) - {"kind", "input"}:
        raise ConfigError(f"{key}.prepare", "must be null or a mapping with kind and input")
    kind = prepare.get("kind")
    if kind is not None:
        if kind not in PREPARE_KINDS:
            raise ConfigError(f"{key}.prepare.kind", f"{kind!r} is not one of {PREPARE_KINDS}")
        if not isinstance(prepare.get("input"), str) or not prepare["input"]:
            raise ConfigError(f"{key}.prepare.input", "must name the real data folder or file")
        if paths:
            # the prepared file is the workflow's own output: a rule never writes a path the
            # user names (it would delete the user's file before rerunning)
            raise ConfigError(
                f"{key}.paths",
                f"leave it empty when {key}.prepare is set: the prepared file is "
                f"{prepared_path(kind)}",
            )
        paths = [prepared_path(kind)]
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{key}.paths", "must be a non-empty list of .h5ad paths")
    obs_map = section.get("obs_map")
    problem = obs_map_problem(obs_map)
    if problem is not None:
        name, why = problem
        raise ConfigError(f"{key}.obs_map" + (f".{name}" if name else ""), why)
    control = section.get("control_value")
    if control is not None and (not isinstance(control, str) or not control):
        raise ConfigError(f"{key}.control_value", "must be the drug value of control cells or null")
    layer = section.get("layer")
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise ConfigError(f"{key}.layer", "must be null (X), 'raw' (raw/X) or a layer name")
    unit = section.get("dose_unit", "uM")
    why = dose_unit_problem(unit)
    if why:
        raise ConfigError(f"{key}.dose_unit", why)
    for k in ("gene_id_column", "gene_symbol_column"):
        v = section.get(k)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{key}.{k}", "must be null (the var index) or a var column")
    prefix = section.get("mito_prefix", "MT-")
    if not isinstance(prefix, str):
        raise ConfigError(f"{key}.mito_prefix", "must be a string")
    return H5adSettings(
        paths=tuple(paths),
        obs_map={str(k): v for k, v in obs_map.items() if v is not None},
        control_value=control,
        layer=layer,
        dose_unit=unit,
        gene_id_column=section.get("gene_id_column"),
        gene_symbol_column=section.get("gene_symbol_column"),
        mito_prefix=prefix,
        prepare_kind=kind,
        prepare_input=prepare.get("input") if kind else None,
    )


# --- checks: models ---------------------------------------------------------------------------
_TARGET_PARTS = ("mean_log_norm", "control_mean")


def _check_models(config: dict) -> None:
    """Model, split and feature settings the schema cannot express: a finite Ridge alpha, a
    max_samples fraction at most 1, a regressor that is not given its target, a test_size
    that is a number, and feature lists of the transform that are disjoint and not both
    empty."""
    models = config["models"]
    alpha = models["ridge"]["alpha"]
    if not 0 <= alpha < float("inf"):  # NaN fails too
        raise ConfigError("models.ridge.alpha", f"must be a finite number >= 0, got {alpha!r}")
    max_samples = models["rf"]["max_samples"]
    if isinstance(max_samples, float) and max_samples > 1:
        raise ConfigError(
            "models.rf.max_samples",
            f"a fraction must lie in (0, 1], got {max_samples!r} (an integer is a row count)",
        )
    feats = models["rf_regressor"]["features"]
    if "delta_mean" in feats:
        raise ConfigError("models.rf_regressor.features", "'delta_mean' is the target")
    if set(_TARGET_PARTS) <= set(feats):
        raise ConfigError(
            "models.rf_regressor.features",
            "mean_log_norm and control_mean together determine delta_mean (target leak)",
        )
    test_size = config["split"]["test_size"]
    if not 0 < test_size < 1:  # the schema's range lets NaN through
        raise ConfigError("split.test_size", f"must be a number in (0, 1), got {test_size!r}")
    numeric, categorical = config["features"]["numeric"], config["features"]["categorical"]
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ConfigError("features.categorical", f"columns {both} are also listed as numeric")
    if not numeric and not categorical:
        raise ConfigError("features.numeric", "no numeric and no categorical feature given")
