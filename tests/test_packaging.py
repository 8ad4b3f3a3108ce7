"""The package declares what it imports: `pip install .` gives an importable `tahoeflow`."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from conftest import REPO

# import name -> distribution name where they differ
DIST = {"sklearn": "scikit-learn", "yaml": "PyYAML", "umap": "umap-learn",
        "xgboost": "xgboost-cpu"}  # fmt: skip


def _third_party_imports() -> set[str]:
    names = set()
    for path in (REPO / "src" / "tahoeflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("tahoeflow",)}


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ]", d)[0].lower() for d in meta["dependencies"]}
    imports = _third_party_imports()
    assert {"numpy", "pyarrow", "sklearn", "huggingface_hub"} <= imports
    missing = sorted(n for n in imports if DIST.get(n, n).lower() not in declared)
    assert not missing, f"imported by src/tahoeflow but not in pyproject dependencies: {missing}"
    # the lock pins every declared dependency
    lock = {line.split("==")[0].lower() for line in (REPO / "requirements.txt").read_text()
            .splitlines() if "==" in line}  # fmt: skip
    assert not declared - lock, sorted(declared - lock)
    extras = meta["optional-dependencies"]
    assert {"workflow", "slurm", "test", "bench"} <= set(extras)


def test_pip_install_gives_every_subpackage(tmp_path):
    """A wheel built from the checkout holds every subpackage, and the installed copy (not the
    checkout) imports all of its modules."""
    import subprocess

    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir),
                    str(REPO)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = wheel_dir.glob("tahoeflow-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)  # fmt: skip
    src = REPO / "src"
    modules = sorted(
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        for p in (src / "tahoeflow").rglob("*.py")
    )
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import importlib\n"
        f"for m in {modules!r}:\n"
        f"    mod = importlib.import_module(m)\n"
        f"    assert mod.__file__.startswith({str(target)!r}), mod.__file__\n"
        f"print(len({modules!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) == len(modules) > 40
