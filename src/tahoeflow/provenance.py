"""Which library code a workflow script runs, as a digest Snakemake can record.

Snakemake reruns a script rule when the script file changes, but the logic lives in this
package. The workflow records, as a ``params`` value of every script rule, the digest of the
script and of every ``tahoeflow`` module it imports (transitively, by reading the import
statements, also those inside functions), so an edit of a module reruns exactly the rules whose
scripts reach it. Reading imports statically over-approximates (an import in a branch that never
runs still counts), which can only cause extra reruns, never a missed one.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "tahoeflow"


def _imports(path: Path, module: str | None) -> frozenset[str]:
    """Dotted names of the ``tahoeflow`` modules imported by the file (``module``: its own
    dotted name, for relative imports; None for a script)."""
    return _parse_imports(path.read_text(), str(path), module)


@functools.cache
def _parse_imports(text: str, filename: str, module: str | None) -> frozenset[str]:
    tree = ast.parse(text, filename=filename)
    base = module.rsplit(".", 1)[0] if module else None  # the package of a module
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if base is None:
                    continue
                parts = base.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{parent}.{node.module}" if node.module else parent
            else:
                name = node.module or ""
            found.add(name)
            # ``from tahoeflow import io``: io may be a submodule
            found.update(f"{name}.{a.name}" for a in node.names)
    return frozenset(n for n in found if n == PACKAGE or n.startswith(PACKAGE + "."))


def _module_file(name: str, package_dir: Path) -> Path | None:
    rel = name.split(".")[1:]
    if not rel:
        return package_dir / "__init__.py"
    path = package_dir.joinpath(*rel)
    for cand in (path.with_suffix(".py"), path / "__init__.py"):
        if cand.is_file():
            return cand
    return None  # a name imported from a module (a function), not a module


def script_modules(script: str | Path, package_dir: str | Path) -> dict[str, Path]:
    """Every package module the script imports, directly or through other modules."""
    package_dir = Path(package_dir)
    todo = list(_imports(Path(script), None))
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, package_dir)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name if path.name != "__init__.py" else name + ".__init__"))
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a submodule runs its packages' __init__
    return dict(sorted(seen.items()))


def code_digest(script: str | Path, package_dir: str | Path) -> str:
    """sha256 (16 hex digits) of the script and the package modules it imports."""
    h = hashlib.sha256()
    h.update(Path(script).read_bytes())
    for name, path in script_modules(script, package_dir).items():
        h.update(b"\0" + name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
