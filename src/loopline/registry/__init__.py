"""The model registry: versions of the registered model, their tags, the aliases, the lock.

MLflow's model registry holds the versions; `versions.Registry` moves the `champion` and
`challenger` aliases and records every decision in the ledger; `lock` serialises those
changes across machines; `reference` keeps a version's drift reference with it. Judging
a challenger is `loopline.promotion`'s; this layer only stores and moves.
"""
