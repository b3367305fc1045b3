"""Compiled, pickle-free scorers: exported at training, loaded by every serving path.

`scorer` holds the format and its loader, `estimators` each family's safe file format,
`registered` the one way to load a registered model version.
"""
