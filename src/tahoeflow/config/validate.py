"""Validation at parse time: the JSON schema (defaults filled in), then the cross-key checks a
schema cannot express. A bad value is a :class:`~tahoeflow.errors.ConfigError` naming the key."""

import copy
import difflib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tahoeflow.cells.doses import dose_unit_problem
from tahoeflow.errors import ConfigError
from tahoeflow.sources.h5ad_settings import (
    PREPARE_KINDS,
    H5adSettings,
    obs_map_problem,
    prepared_path,
)


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
