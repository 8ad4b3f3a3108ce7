# `make demo`: install into .venv and run the whole workflow on the embedded demo.
# `make test`: install into .venv and run the checks CI runs (lint, format, tests).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo report test lint bench sysdeps

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores 8

report: demo
	$(BIN)/snakemake --report report.html

lint: install
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/ruff format --check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1

# System packages some tests need (Chromium for the report check, R with limma, edgeR and
# DESeq2 as the DE oracle); SLURM is set up by its test.
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	bash ci/install-chromium.sh && bash ci/install-r.sh; \
	else echo "not root: skipping system packages (browser and R reference tests skip, SLURM test skips)"; fi

test: lint sysdeps
	$(BIN)/python -m pytest -q --timeout 900 --durations=15

bench: install
	$(BIN)/python benchmarks/run_all.py
