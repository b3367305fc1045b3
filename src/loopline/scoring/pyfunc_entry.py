"""MLflow's entry point for a Loopline model ("models from code").

MLflow stores this file with every logged model and runs it when the model is loaded; it
names the pyfunc class to use. It is not imported by the library itself.
"""

from mlflow.models import set_model

from loopline.scoring.pyfunc import LooplinePyfunc

set_model(LooplinePyfunc())
