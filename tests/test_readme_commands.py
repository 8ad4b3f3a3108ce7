"""Every `snakemake` command README shows, run as a test (a dry run where a run is long).

The commands are read from README itself (inline code and ```bash blocks), so a command added
to README without working fails here. Each runs in a copy of the workflow placed beside
``shared`` (the example configs name ``../shared/data/real``), as a user would type it in the
checkout, with ``-n`` added unless the command is itself cheap (``--lint``, ``--unlock``).
``--report`` needs a finished run: it is run after a real run of a small config.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _NO_SLURM, REPO, copy_repo
from test_orchestration import parse_job_stats

pytestmark = pytest.mark.workflow

SHARED = REPO.parent / "shared"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    cmds = re.findall(r"`(snakemake [^`]+)`", text)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("snakemake "):
                cmds.append(re.sub(r"\s+", " ", line))
    return list(dict.fromkeys(cmds))


def test_readme_shows_the_commands_we_expect_to_test():
    cmds = readme_commands()
    assert len(cmds) >= 8, cmds
    assert any("--config embed=" in c for c in cmds)
    assert any("download_all" in c for c in cmds)
    assert any("profiles/slurm" in c for c in cmds)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    repo = copy_repo(root / "repo")
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    return repo


def _run(repo: Path, argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{_NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=repo, capture_output=True, text=True,
        timeout=timeout, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, checkout, tmp_path):
    argv = shlex.split(command)
    if "--report" in argv:
        pytest.skip("needs a finished run: tested in test_readme_report_command")
    if "examples/" in command and not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the example configs read its real data)")
    cheap = {"--lint", "--unlock"} & set(argv)
    if not cheap:
        argv.append("-n")
    if "download_all" in argv:  # the hub source: the target exists only there
        argv += ["--config", "source={kind: hub, files: '0:2'}"]
    proc = _run(checkout, argv)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\n{out[-4000:]}"
    if "--lint" in argv:
        assert "Lints for" not in out, out[-4000:]
    if "eccite.yaml" in command:  # 20,729 rows in shards of 5,000: five, none empty
        assert parse_job_stats(out)["summarize_shard"] == 5
    if "--config" in command and "n_components" in command:
        assert "embed.n_components" not in out  # the value arrived as an integer


def test_readme_report_command(checkout):
    small = ["--config", "demo={n_files: 2, cells_per_file: 300, n_cell_lines: 3, n_drugs: 4, "
             "n_plates: 1}", "source={files: '0:2'}", "stages={de: false, updown: false, "
             "pergene: false, anndata: false}", "embed={hvg: {n_top: 100}, n_components: 5}",
             "models={rf: {n_estimators: 5}, rf_regressor: {grid: {n_estimators: [5], "
             "max_depth: [3]}}}"]  # fmt: skip
    proc = _run(checkout, ["snakemake", "--cores", "2", *small], timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    cmd = next(c for c in readme_commands() if "--report" in c)
    proc = _run(checkout, [*shlex.split(cmd), *small])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (checkout / "report.html").stat().st_size > 100_000


def test_every_test_named_in_readmes_reliability_table_exists():
    text = (REPO / "README.md").read_text()
    names = set(re.findall(r"^\|.*\| `(test_\w+)` \|$", text, re.M))
    assert len(names) >= 30
    defined = set()
    for f in (REPO / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", f.read_text(), re.M))
    assert not names - defined, sorted(names - defined)


def _contract_patterns() -> list[re.Pattern]:
    text = (REPO / "docs" / "data_contract.md").read_text()
    pats = []
    for path in re.findall(
        r"`((?:results/)?[\w{}<>*,./-]+\.(?:parquet|csv|json|npz|joblib|h5ad|png|tsv|log))`", text
    ):
        rx = re.escape(path)
        for a, b in ((r"\{shard\}", r"\d{5}(-\d{4})?"), (r"\{batch\}", r"b\d{5}"),
                     (r"NNNNN", r"\d{5}"), (r"MMMMM", r"\d{5}"), (r"\*", r"[^/]+"),
                     (r"<stage>", r"[^/]+"), (r"\{k\}", r"\d+"), (r"\{train,test\}", r"(train|test)")):  # fmt: skip
            rx = rx.replace(a, b)
        pats.append(re.compile(rf"(^|/){rx}$"))
    return pats


def test_every_output_of_the_default_dag_is_in_the_data_contract(tmp_path):
    proc = _run(copy_repo(tmp_path / "repo"), ["snakemake", "--summary", "--cores", "1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    outputs = [o for o in outputs if o.startswith("results/")]
    assert len(outputs) > 60
    pats = _contract_patterns()
    missing = [o for o in outputs if not any(p.search(o) for p in pats)]
    assert not missing, f"not in docs/data_contract.md: {missing}"
