"""Promotion: does a challenger deserve to replace the champion, and the record of why.

`rule` is the promotion rule as pure functions of predictions already made; `gate`
gathers that evidence on the freshest labeled window and records the verdict in the
registry; `card` writes the model card of a registered version; `sequential` compares
two models on the same labeled records with a confidence sequence that stays valid when
it is looked at after every batch (for judging a challenger on live traffic).
"""
