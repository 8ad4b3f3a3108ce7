#!/usr/bin/env bash
# Install R with limma, edgeR and DESeq2 from Debian's packages (the oracle of
# tests/test_de_reference.py) unless Rscript can already load all three.
# Idempotent: does nothing when they are present. Needs root (or sudo) and apt.
set -euo pipefail

PROBE='suppressPackageStartupMessages({library(limma); library(edgeR); library(DESeq2)}); cat(as.character(packageVersion("limma")), as.character(packageVersion("edgeR")), as.character(packageVersion("DESeq2")), "\n")'

if command -v Rscript >/dev/null 2>&1 && Rscript -e "$PROBE" >/dev/null 2>&1; then
    echo "R already has limma, edgeR, DESeq2: $(Rscript -e "$PROBE" 2>/dev/null)"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-r.sh: need root or sudo to run apt-get" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends r-base-core r-bioc-limma r-bioc-edger r-bioc-deseq2

echo "limma edgeR DESeq2: $(Rscript -e "$PROBE")"
