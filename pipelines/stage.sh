#!/bin/sh
# Run one pipeline module with the project's Python: the virtual environment `make setup`
# builds (.venv) when there is one, else the `python` on PATH (an activated environment,
# CI). DVC runs a stage's command with the caller's PATH, so without this
# `.venv/bin/dvc repro` from a shell where the venv is not activated would run the
# system Python, which has none of the project's packages.
# Usage (dvc.yaml): sh pipelines/stage.sh pipelines.validate [args...]
#
# It also pins OpenBLAS's kernel on x86-64. numpy and scipy ship one OpenBLAS built for
# every CPU that picks its kernel at start-up, and the kernels round differently: the same
# code, data and params gave a logistic model (and so a dvc.lock) on an AVX-512 machine
# that differed by bytes from an AVX2 one. Haswell's kernel runs on every x86-64 CPU with
# AVX2, so all of them now write the same files; set OPENBLAS_CORETYPE to choose another.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ "$(uname -m)" = x86_64 ] \
    && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    export OPENBLAS_CORETYPE=Haswell
fi
if [ -x .venv/bin/python ]; then
    exec .venv/bin/python -m "$@"
fi
exec python -m "$@"
