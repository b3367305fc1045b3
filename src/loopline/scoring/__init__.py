"""Compiled, pickle-free scorers: written at training, loaded by every serving path.

`features` is the one implementation of the features (fitted tables, saved as JSON);
`formats` the safe file format of each kind of estimator and its loader; `scorer` the
scorer folder (manifest, checksums) and its loader; `registered` the one way to load a
registered model version; `pyfunc` the MLflow model that takes raw records; `batch`
scores a file in chunks.
"""
