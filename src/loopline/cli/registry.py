"""`loopline registry`: show and change the registered model's aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.core.errors import LooplineError
from loopline.workspace import Workspace

registry_app = typer.Typer(
    help="Show and change the registered model's aliases.", no_args_is_help=True
)
ParamsOption = Annotated[Path, typer.Option("--params", help="Path to params.yaml.")]
PARAMS = Path("params.yaml")


def _fail(error: LooplineError) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@registry_app.command("status")
def registry_status(params: ParamsOption = PARAMS) -> None:
    """Which version is champion and which is challenger, and any drift from the ledger.

    It warns when the champion alias points at a version the ledger did not leave as
    champion, or at one the service refuses to load, and says what to do.
    """
    from loopline.promotion.audit import champion_warnings  # noqa: PLC0415 - scoring loads

    registry = Workspace.load(params).registry
    status = registry.status()
    typer.echo(f"model: {status['model']}")
    for alias, info in status["aliases"].items():
        if info is None:
            typer.echo(f"  {alias:<10} (none)")
        else:
            typer.echo(
                f"  {alias:<10} version {info['version']} ({info['family'] or 'no family tag'}), "
                f"last decision: {info['decision']}, test roc_auc {info['test_roc_auc']}"
            )
    typer.echo(f"  {'ledger':<10} champion: version {status['ledger_champion']}")
    if (canary := status["canary"]) is not None:
        typer.echo(
            f"  {'canary':<10} version {canary['version']} facing {canary['champion']}: step "
            f"{canary['step'] + 1}, {canary['share']:.0%} of traffic since {canary['stepped_at']}"
            f" (began {canary['started_at']})"
        )
        for line in canary_lines(status["canary_last_look"]):
            typer.echo(f"      {line}")
    for line in champion_warnings(registry):
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW)


def canary_lines(entry: dict | None) -> list[str]:
    """A canary's latest ledger entry in a few lines: the decision, the test, the guardrails."""
    if entry is None:
        return []
    lines = [f"last look {entry['time']}: {entry['action']}: {entry['reason']}"]
    if "pairs" in entry:
        low, high = entry["interval"]
        auc = entry.get("roc_auc") or {}
        lines.append(
            f"{entry['pairs']} labeled pairs (matured until {entry['matured_until']}), "
            f"{entry['loss']} difference {entry['mean_difference']} in [{low}, {high}]: "
            f"{entry['verdict']}; roc_auc champion {auc.get('champion')} canary {auc.get('canary')}"
        )
        guarded = entry["guardrails"]
        lines.append(
            f"guardrails on {guarded['requests']} requests: routed {guarded['routed_share']}, "
            f"errors {guarded['error_rate']}, p99 ms {guarded['p99_ms']}, "
            f"positive rate {guarded['positive_rate']}"
        )
    return lines


@registry_app.command("history")
def registry_history(
    params: ParamsOption = PARAMS,
    limit: Annotated[int, typer.Option(help="Show the last N decisions.")] = 20,
) -> None:
    """The promotion ledger: who was champion when, and why."""
    entries = Workspace.load(params).registry.ledger.entries()[-limit:]
    if not entries:
        typer.echo("no decisions recorded yet")
    for entry in entries:
        typer.echo(
            f"{entry['time']}  {entry['action']:<8} v{entry['version']:<4} "
            f"champion {entry['previous_champion']} -> {entry['champion']}  "
            f"by {entry['actor']}: {entry['reason']}"
        )
        for line in entry.get("checks") or []:
            typer.echo(f"      {line}")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="Registered version to promote.")],
    params: ParamsOption = PARAMS,
    force: Annotated[bool, typer.Option(help="Skip the rule (needs --reason).")] = False,
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "",
    dry_run: Annotated[bool, typer.Option(help="Report the decision, move nothing.")] = False,
) -> None:
    """Promote a version to champion if it passes the promotion rule (or --force)."""
    from loopline.promotion.gate import judge_on_recent_window  # noqa: PLC0415 - scoring loads

    workspace = Workspace.load(params)
    try:
        if force:
            if not reason:
                raise LooplineError("--force needs --reason: the ledger records why")
            entry = workspace.registry.force_promote(version, reason)
            typer.echo(f"version {version} is champion (forced; was {entry['previous_champion']})")
            return
        gate, entry = judge_on_recent_window(workspace, version, dry_run)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"{entry['action']}: version {version}; champion is now {entry['champion']}")
    if "unservable_champion" in entry:
        typer.echo(
            f"  judged against version {entry['judged_against']}, the last good champion: "
            f"version {entry['faced']} cannot be served ({entry['unservable_champion']})"
        )
    for line in gate.reasons():
        typer.echo(f"  {line}")
    if not gate.passed:
        raise typer.Exit(code=2)


@registry_app.command("rollback")
def registry_rollback(
    params: ParamsOption = PARAMS,
    reason: Annotated[str, typer.Option(help="Why; recorded in the ledger.")] = "manual rollback",
) -> None:
    """Point champion back at the previous champion (recorded in the ledger)."""
    try:
        entry = Workspace.load(params).registry.rollback(reason)
    except LooplineError as error:
        raise _fail(error) from None
    typer.echo(f"rolled back: champion {entry['previous_champion']} -> {entry['champion']}")
