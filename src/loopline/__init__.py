"""Loopline: a closed-loop MLOps reference project.

The library is a house of floors; a module imports only from the floors below its own
(the import-linter contract in pyproject.toml, checked by `make test`). From the ground:

    core        errors, atomic file writes, seeds, the params models, MLflow tag names
    infra       the stores (prediction log, monitor state, ledger), processes, Prefect, DVC
    data        the data contract, datasets, validation, splits and the time axis
    registry    registered model versions, aliases, the promotion lock
    scoring     the compiled scorer: features, safe estimator formats, loading a version
    workspace   one params file resolved once: locations, dataset, axis, stores
    training    featurize, model families (plug-ins), training, compiling, metrics
    promotion   the promotion rule, the gate that applies it, model cards
    monitoring  drift and data quality of served traffic, the retrain rule
    serving     the BentoML service, its guards and schema, batch scoring
    loop        retraining, the replay and its report
    cli         the `loopline` command

`pipelines/` (outside the library) holds the Prefect flows that wire these together.
"""
