"""The package's layout is documented and its rules hold: docs/architecture.md names every
module and rule, each subpackage's docstring names its modules, and configuration errors are
raised only at parse time (no library module raises ConfigError)."""

from __future__ import annotations

import ast
import re

from conftest import REPO

import tahoeflow

SRC = REPO / "src" / "tahoeflow"
DOC = (REPO / "docs" / "architecture.md").read_text()
# the modules that may raise ConfigError: the parse-time validation, and the error types and
# job runner that define and report it
CONFIG_LAYER = {"config/files.py", "config/validate.py", "config/plan.py", "errors.py", "logs.py"}


def _modules():
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py")


def test_every_module_is_in_the_architecture_note():
    missing = [str(p.relative_to(SRC)) for p in _modules() if f"`{p.stem}`" not in DOC]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_rule_is_in_the_architecture_note():
    rules = set()
    for f in (REPO / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^\s*rule (\w+):", f.read_text(), re.M))
    assert len(rules) > 40
    missing = sorted(r for r in rules if f"`{r}`" not in DOC)
    assert not missing, f"docs/architecture.md does not name the rules {missing}"


def test_each_subpackage_docstring_names_its_public_modules():
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        public = [p.stem for p in init.parent.glob("*.py") if not p.name.startswith("_")]
        missing = [m for m in public if f":mod:`.{m}`" not in doc]
        assert doc and not missing, f"{init.relative_to(SRC)} docstring lacks {missing}"


def test_no_library_module_raises_config_errors():
    offenders = []
    for path in _modules():
        if str(path.relative_to(SRC)) in CONFIG_LAYER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = getattr(call, "id", getattr(call, "attr", ""))
                if name == "ConfigError":
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, f"ConfigError raised outside the parse-time layer: {offenders}"


def test_the_package_imports_without_snakemake():
    assert tahoeflow.__version__
    for path in _modules():
        text = path.read_text()
        assert "import snakemake" not in text and "from snakemake" not in text, path
