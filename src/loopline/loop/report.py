"""The replay's report: report.json, a plot of quality per batch, and one HTML page.

Everything is read from the story's fields (`loopline.loop.replay.Replay.story`): which
limits each batch crossed (`flags`), what each retrain's gate found (`retrain.decision`),
how the batches were placed (`by`). An interrupted replay reports the batches it played.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.core.io import atomic_path, write_json

PERIOD_FIELDS = ("first_day", "last_day", "rows", "served_versions", "served", "frozen",
                 "drift_share", "drifted_columns", "flags", "flagged_because", "decision",
                 "triggered", "retrain", "canary")  # fmt: skip


def write_report(story: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, quality.png and report.html in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(story["periods"], columns=list(PERIOD_FIELDS))
    write_json(story | {"summary": summarize(frame)}, out_dir / "report.json")
    plot = out_dir / "quality.png"
    draw(frame, plot, story["positive"], story["replayed"], by_arrival=story.get("by") == "arrival")
    html = out_dir / "report.html"
    with atomic_path(html) as tmp:
        tmp.write_text(render_html(story, frame, plot))
    return {"json": out_dir / "report.json", "png": plot, "html": html}


def _flagged(kind: str) -> Any:
    return lambda flags: any(flag["kind"] == kind for flag in flags)


drifted, degraded = _flagged("drift"), _flagged("quality")


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of the replay."""
    served = frame["served"].apply(lambda m: m.get("roc_auc")).astype(float)
    frozen = frame["frozen"].apply(lambda m: m.get("roc_auc")).astype(float)
    retrains = [r for r in frame["retrain"] if r]
    looks = [c for c in frame["canary"] if c]
    ended = [c for c in looks if c["action"] in ("promote", "canary-rollback")]
    return {
        "periods": len(frame),
        "mean_roc_auc_served": round(float(served.mean()), 4) if len(frame) else None,
        "mean_roc_auc_frozen": round(float(frozen.mean()), 4) if len(frame) else None,
        "periods_served_better": int((served > frozen).sum()),
        "periods_flagged_for_traffic_drift": int(frame["flags"].apply(drifted).sum()),
        "periods_flagged_for_quality": int(frame["flags"].apply(degraded).sum()),
        "retrains_triggered": int(frame["triggered"].sum()),
        "promotions": sum(1 for r in retrains if r.get("promoted"))
        + sum(1 for c in looks if c["action"] == "promote"),
        "canaries_started": sum(
            1 for r in retrains if (r.get("decision") or {}).get("action") == "canary-start"
        ),
        "canary_looks": len(looks),
        "canaries_promoted": sum(1 for c in ended if c["action"] == "promote"),
        "canaries_rolled_back": sum(1 for c in ended if c["action"] == "canary-rollback"),
        "labeled_pairs_per_decided_canary": [c["pairs"] for c in ended],
    }


def _positions(frame: pd.DataFrame, by_arrival: bool) -> tuple[pd.Series, pd.Series]:
    """Where each batch starts and ends on the x axis: its days, or its number.

    Batches of arrivals are placed by number (their arrival times are seconds apart, with
    the waits for retrains between); as for days, the point closes its batch.
    """
    if by_arrival:
        number = pd.Series(range(1, len(frame) + 1), dtype=float)
        return number - 0.9, number
    return pd.to_datetime(frame["first_day"]), pd.to_datetime(frame["last_day"])


def _mark_events(top: Any, frame: pd.DataFrame, starts: pd.Series, ends: pd.Series) -> None:
    """Shade drifted batches, cross degraded ones, and draw a line at every retrain."""
    served_auc = frame["served"].apply(lambda m: m.get("roc_auc"))
    for start, end, auc, row in zip(starts, ends, served_auc, frame.itertuples(), strict=True):
        if drifted(row.flags):
            top.axvspan(start, end, color="orange", alpha=0.2, lw=0)
        if degraded(row.flags):
            top.plot([end], [auc], "x", color="red", markersize=10, mew=2)
        if row.retrain:
            promoted = row.retrain.get("promoted")
            started = (row.retrain.get("decision") or {}).get("action") == "canary-start"
            color = "green" if promoted else ("purple" if started else "red")
            top.axvline(end, color=color, ls="-" if promoted else ":")
            label = f"v{row.retrain['champion_after']}" if promoted else (
                f"canary v{row.retrain['registered_version']}" if started else "kept"
            )  # fmt: skip
            top.annotate(
                label, (end, 0.99), xycoords=("data", "axes fraction"),
                fontsize=8, ha="center", va="top",
            )  # fmt: skip


def _mark_canaries(top: Any, frame: pd.DataFrame, ends: pd.Series) -> None:
    """A line where a canary ended: promoted (green, dashed) or rolled back (red, dash-dot)."""
    for end, look in zip(ends, frame["canary"], strict=True):
        if not look or look["action"] not in ("promote", "canary-rollback"):
            continue
        promoted = look["action"] == "promote"
        top.axvline(end, color="green" if promoted else "red", ls="--" if promoted else "-.")
        top.annotate(
            f"canary v{look['version']} {'promoted' if promoted else 'rolled back'}",
            (end, 0.93), xycoords=("data", "axes fraction"), fontsize=7, ha="center", va="top",
        )  # fmt: skip


def _quality_panel(top: Any, frame: pd.DataFrame, starts: pd.Series, ends: pd.Series) -> None:
    """ROC-AUC per batch, served vs frozen, with the loop's events and their key."""
    from matplotlib.lines import Line2D  # noqa: PLC0415 - matplotlib loads for the plot only
    from matplotlib.patches import Patch  # noqa: PLC0415

    top.plot(ends, frame["served"].apply(lambda m: m.get("roc_auc")), "o-",
             label="served (retrained by the loop)")  # fmt: skip
    top.plot(ends, frame["frozen"].apply(lambda m: m.get("roc_auc")), "s--", color="grey",
             label="frozen first champion")  # fmt: skip
    _mark_events(top, frame, starts, ends)
    _mark_canaries(top, frame, ends)
    top.margins(y=0.12)
    top.set_ylabel("ROC-AUC")
    key = [
        Patch(color="orange", alpha=0.2, label="traffic drift flagged"),
        Line2D([], [], ls="", marker="x", color="red", mew=2, label="quality drop flagged"),
        Line2D([], [], color="green", label="retrain promoted (new version)"),
        Line2D([], [], color="red", ls=":", label="retrain rejected (champion kept)"),
        Line2D([], [], color="purple", ls=":", label="retrain passed: a canary starts"),
        Line2D([], [], color="green", ls="--", label="canary promoted"),
        Line2D([], [], color="red", ls="-.", label="canary rolled back"),
    ]
    top.legend(
        handles=top.get_legend_handles_labels()[0] + key,
        loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False,
    )  # fmt: skip


def _rates_panel(bottom: Any, frame: pd.DataFrame, ends: pd.Series, positive: str) -> None:
    """The observed positive rate against the mean predicted, served and frozen."""
    bottom.plot(ends, frame["served"].apply(lambda m: m["positive_rate"]), "k-",
                label=f"observed {positive} rate")  # fmt: skip
    bottom.plot(ends, frame["served"].apply(lambda m: m["mean_probability"]), "o-",
                label="mean predicted (served)")  # fmt: skip
    bottom.plot(ends, frame["frozen"].apply(lambda m: m["mean_probability"]), "s--",
                color="grey", label="mean predicted (frozen)")  # fmt: skip
    bottom.set_ylabel(f"{positive} rate")
    bottom.legend(loc="upper left", fontsize=8)


def draw(
    frame: pd.DataFrame, path: Path, positive: str, replayed: str, *, by_arrival: bool = False
) -> None:
    """ROC-AUC per batch (served vs frozen) and `positive` rates, with the loop's events."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    starts, ends = _positions(frame, by_arrival)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2])
    _quality_panel(top, frame, starts, ends)
    fig.suptitle(
        f"Replay of {replayed}: ROC-AUC per period, served by the loop vs frozen", fontsize=11
    )
    _rates_panel(bottom, frame, ends, positive)
    if by_arrival:
        bottom.set_xticks(ends, [str(int(n)) for n in ends])
        bottom.set_xlabel("batch, in arrival order")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def render_html(story: dict[str, Any], frame: pd.DataFrame, plot: Path) -> str:
    """A self-contained HTML page: the plot, the summary and one row per batch."""
    image = base64.b64encode(plot.read_bytes()).decode()
    summary = summarize(frame)
    rows = "\n".join(
        f"<tr><td>{r.first_day}..{r.last_day}</td><td>{r.rows}</td>"
        f"<td>{', '.join(f'v{k}: {v}' for k, v in r.served_versions.items())}</td>"
        f"<td>{r.served.get('roc_auc', '')}</td><td>{r.frozen.get('roc_auc', '')}</td>"
        f"<td>{r.served['positive_rate']}</td><td>{r.drift_share}</td>"
        f"<td>{', '.join(r.drifted_columns)}</td><td>{'; '.join(r.flagged_because)}</td>"
        f"<td>{'RETRAIN' if r.triggered else ''}</td>"
        f"<td>{_retrain_cell(r.retrain)}</td><td>{_canary_cell(r.canary)}</td>"
        f"<td>{r.decision}</td></tr>"
        for r in frame.itertuples()
    )
    items = "".join(f"<li>{k.replace('_', ' ')}: {v}</li>" for k, v in summary.items())
    stopped = (
        f"<p><b>Interrupted ({story['interrupted']}) after {len(frame)} of "
        f"{story.get('planned_batches')} batches.</b></p>"
        if story.get("interrupted")
        else ""
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Loopline replay</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>Loopline: replay of {story["replayed"]}</h1>{stopped}
<p>Frozen model: version {story["frozen_version"]};
champion at the end: version {story["final_champion"]}.</p>
<ul>{items}</ul>
<img src="data:image/png;base64,{image}" style="max-width:100%">
<table><tr><th>period</th><th>{story["record"]}s</th><th>served by</th><th>ROC-AUC served</th>
<th>ROC-AUC frozen</th><th>{story["positive"]} rate</th><th>traffic drift share</th><th>drifted</th>
<th>flagged because</th><th>decision</th><th>retrain</th><th>canary</th><th>reason</th></tr>
{rows}</table></body></html>
"""


def _canary_cell(canary: dict | None) -> str:
    """The canary's look after the batch: version, step, decision and why."""
    if not canary:
        return ""
    return (
        f"v{canary['version']} step {canary['step'] + 1} ({canary['share']:.0%}): "
        f"{canary['action']}: {canary['reason']}"
    )


def _retrain_cell(retrain: dict | None) -> str:
    if not retrain:
        return ""
    decision = retrain.get("decision") or {}
    judged_on = f"judged on {decision.get('window')}" if decision.get("window") else ""
    if decision.get("difference") is not None:
        judged_on += (
            f": ROC-AUC {decision['difference']:+.4f} vs v{decision['faced']} "
            f"(interval {decision['low']:+.4f}..{decision['high']:+.4f})"
        )
    if retrain.get("promoted"):
        swap = retrain.get("swap_seconds")
        return f"v{retrain['registered_version']} promoted, served after {swap} s; {judged_on}"
    failed = "; ".join(decision.get("failed", [])) or retrain["state"]
    return f"v{retrain['registered_version']} not promoted ({failed}); {judged_on}"
