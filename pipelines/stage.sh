#!/bin/sh
# Run one pipeline module with the project's Python: the virtual environment `make setup`
# builds (.venv) when there is one, else the `python` on PATH (an activated environment,
# CI). DVC runs a stage's command with the caller's PATH, so without this
# `.venv/bin/dvc repro` from a shell where the venv is not activated would run the
# system Python, which has none of the project's packages.
# Usage (dvc.yaml): sh pipelines/stage.sh pipelines.validate [args...]
if [ -x .venv/bin/python ]; then
    exec .venv/bin/python -m "$@"
fi
exec python -m "$@"
