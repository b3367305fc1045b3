"""Does the registry still say what the ledger decided? What `registry status` warns about.

Anyone with access to MLflow can move the `champion` alias (its UI has a button for it),
so the alias can drift from the ledger: point at a version Loopline never promoted, or at
one the service refuses to load (no compiled scorer: `loopline.scoring.registered`). The
service keeps serving what it had; this says so, and what to do.
"""

from __future__ import annotations

from loopline.registry.versions import CHAMPION, Registry
from loopline.scoring.formats import ScorerError
from loopline.scoring.registered import load_version


def unservable(registry: Registry, version: str) -> str | None:
    """Why the service would refuse `version` (None: it loads, as the service loads it)."""
    try:
        load_version(registry, version)
    except ScorerError as error:
        return str(error)
    return None


def champion_warnings(registry: Registry) -> list[str]:
    """One line per way the champion alias disagrees with the ledger, then what to do."""
    champion, recorded = registry.alias_version(CHAMPION), registry.ledger_champion()
    if champion is None:
        if recorded is None:
            return []
        return [
            f"the champion alias is unset, but the ledger's last decision left version "
            f"{recorded} champion",
            f"to restore it: loopline registry promote {recorded} --force --reason '...'",
        ]
    warnings = []
    if champion != recorded:
        if champion not in registry.ledger_champions():
            found = "a version the ledger never promoted"
        else:
            found = f"not the champion the ledger's last decision left (version {recorded})"
        warnings.append(
            f"the champion alias points at version {champion}, {found}: it was moved "
            "outside Loopline"
        )
    if (refused := unservable(registry, champion)) is not None:
        warnings.append(
            f"version {champion} cannot be served: the service refuses it and keeps serving "
            f"the version it had ({refused})"
        )
    if not warnings:
        return []
    if recorded is not None and recorded != champion:
        todo = f"`loopline registry rollback` points it back at version {recorded}"
    else:
        todo = "`loopline registry rollback` points it back at the champion before it"
    return [*warnings, f"to fix: {todo}, or `loopline registry promote <version>` judges one"]
