"""Training: from validated tables to compiled scorers, one model family at a time.

`featurize` splits the examples and fits the feature tables; `feature_sets` reads what it
wrote; `families` holds the model families as plug-ins (one module each); `train` trains
one and picks its threshold; `compile` writes its scorer and proves it agrees with the
trained model; `metrics` are the imbalanced-target metrics, curves and the paired
bootstrap; `tracking` the lineage tags of a run.
"""
