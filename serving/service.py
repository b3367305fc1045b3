"""The bento's entry: the prediction service lives in `loopline.serving.service`."""

from loopline.serving.service import PredictionAPI, PredictionModel

__all__ = ["PredictionAPI", "PredictionModel"]
