"""The config files Snakemake loaded, re-read strictly (YAML 1.1 traps, repeated keys), and
``snakemake --config`` values typed by the schema."""

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tahoeflow.errors import ConfigError


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
