"""Where MLflow keeps runs, models and the registry, for this process.

MLflow holds its tracking URI in the process, so pointing it somewhere is an explicit
call, made when a Workspace first needs the tracking store (never at import).
"""

from __future__ import annotations

import mlflow

from loopline.core.params import MlflowParams


def configure_mlflow(params: MlflowParams) -> str:
    """Point MLflow at the configured store and its experiment, which new runs then join.

    `params` holds absolute locations (a Workspace's). A new experiment of a local store
    gets `params.artifact_root`; on a tracking server (http://...) artifacts go to the
    server's own store (`mlflow server --artifacts-destination`), shared by every client.
    Returns the experiment id.
    """
    uri = params.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(params.experiment)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif uri.startswith(("http://", "https://")):
        experiment_id = mlflow.create_experiment(params.experiment)
    else:
        params.artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(
            params.experiment, artifact_location=params.artifact_root.resolve().as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment_id)  # runs go there, not to "Default"
    return experiment_id
