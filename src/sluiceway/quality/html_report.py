"""The data-quality report of a run as one self-contained HTML page.

:func:`write_dq_report` turns a run's :class:`~sluiceway.core.metrics.PipelineMetrics`
(``metrics.rules``, aggregated per validator and check over the run, and the
dead-letter counts) into a page a person can read: the run's books at the top,
then per validator a table of its checks — tool, column, row- or batch-level,
``on_fail``, rows (or batches) checked and failed, failure rate with a bar,
batches failed, rows dead-lettered under the check, sample failing values — with
failing checks first. No script, no external asset: it opens from a CI artifact
or an e-mail as well as from disk.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from pathlib import Path
from typing import Any

from sluiceway.core.metrics import PipelineMetrics, RuleStats

__all__ = ["render_dq_report", "write_dq_report"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:20px 32px}
header h1{margin:0;font-size:20px;font-weight:600}
header .sub{color:#aab2c5;margin-top:4px;font-size:13px}
main{padding:20px 32px;max-width:1400px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:20px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:130px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:600}
.card .k{color:#5b6478;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.bad .v{color:#c0392b}.warn .v{color:#b7791f}.good .v{color:#23804a}
section{background:#fff;border-radius:8px;padding:16px 20px;margin-bottom:18px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{margin:0 0 4px;font-size:16px}
section .meta{color:#5b6478;font-size:12px;margin-bottom:10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{font-size:12px;color:#5b6478;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f5;
  padding:1px 4px;border-radius:3px}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
  white-space:nowrap}
.p-pass{background:#e3f4ea;color:#23804a}.p-dlq{background:#fde8e6;color:#c0392b}
.p-warn{background:#fdf3dc;color:#b7791f}.p-fail{background:#c0392b;color:#fff}
.bar{background:#eceef2;border-radius:3px;height:6px;width:90px;margin-top:3px}
.bar>i{display:block;height:6px;border-radius:3px;background:#c0392b}
.level{color:#5b6478;font-size:12px}
.sample{max-width:360px;word-break:break-word}
.empty{color:#5b6478}
footer{color:#8a93a6;font-size:12px;padding:0 32px 24px}
"""


def write_dq_report(metrics: PipelineMetrics, path: Path) -> None:
    """Write the run's data-quality report to ``path`` (replaced atomically)."""
    path = Path(path)
    page = render_dq_report(metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_dq_report(metrics: PipelineMetrics) -> str:
    """The report as an HTML document (see :func:`write_dq_report`)."""
    m = metrics
    by_validator: dict[str, list[RuleStats]] = {}
    for stats in m.rules.values():
        by_validator.setdefault(stats.validator, []).append(stats)
    rule_letters, other_letters = _split_dead_letters(m.dead_lettered_by)
    failing = sum(1 for s in m.rules.values() if s.failed)
    validation_dlq = sum(rule_letters.values())
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>Data quality — {_e(m.pipeline)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>Data quality — {_e(m.pipeline)}</h1>",
        f"<div class=sub>run {_e(m.run_id)} · {_e(m.status)}"
        f"{' · dry run (nothing written)' if getattr(m, 'dry_run', False) else ''}"
        f" · {_when(m.started_at)}"
        f" · {m.duration:,.1f} s</div></header><main>",
        _cards(m, len(m.rules), failing, validation_dlq),
    ]
    if m.error:
        parts.append(
            f"<section><h2>The run failed</h2><div class=meta>{_e(m.error_type or '')}</div>"
            f"<code>{_e(m.error)}</code></section>"
        )
    if not by_validator:
        parts.append("<section><p class=empty>No validator ran in this run.</p></section>")
    for validator, rules in by_validator.items():
        parts.append(_validator_section(validator, rules, rule_letters))
    if other_letters:
        parts.append(_other_letters(other_letters))
    parts.append(
        "</main><footer>Row-level checks count rows; batch-level checks (row count, "
        "freshness, schema, aggregates, or any check whose tool does not say which rows "
        "failed) count batches, and under <code>dlq</code> send the whole batch to the "
        f"dead-letter queue. Generated by sluiceway at {_when(m.finished_at or m.started_at)}."
        "</footer></body></html>"
    )
    return "".join(parts)


# -- parts ------------------------------------------------------------------------------


def _cards(m: PipelineMetrics, checks: int, failing: int, validation_dlq: int) -> str:
    replayed = int(getattr(m, "replayed", 0) or 0)  # DLQ replays (newer metrics)
    cards = [
        ("rows read", f"{m.read:,}", ""),
        *([("rows replayed", f"{replayed:,}", "")] if replayed else []),
        ("rows written", f"{m.written:,}", "good" if m.written else ""),
        ("dead-lettered", f"{m.dead_lettered:,}", "bad" if m.dead_lettered else "good"),
        ("by validation", f"{validation_dlq:,}", "bad" if validation_dlq else ""),
        ("warned rows", f"{m.warned:,}", "warn" if m.warned else ""),
        ("checks failing", f"{failing:,} / {checks:,}", "bad" if failing else "good"),
        ("books balance", "yes" if m.balanced else "NO", "good" if m.balanced else "bad"),
    ]
    inner = "".join(
        f"<div class='card {cls}'><div class=v>{_e(value)}</div><div class=k>{_e(key)}</div></div>"
        for key, value, cls in cards
    )
    return f"<div class=cards>{inner}</div>"


def _validator_section(
    validator: str, rules: list[RuleStats], rule_letters: dict[tuple[str, str], int]
) -> str:
    tools = ", ".join(sorted({r.tool for r in rules}))
    failing = [r for r in rules if r.failed]
    # Failing checks first (most failures first), then the passing ones in run order.
    ordered = sorted(failing, key=lambda r: -_rate(r)) + [r for r in rules if not r.failed]
    head = (
        "<tr><th>check</th><th>column</th><th>level</th><th>on_fail</th><th>outcome</th>"
        "<th class=n>checked</th><th class=n>failed</th><th class=n>failure rate</th>"
        "<th class=n>batches failed</th><th class=n>dead-lettered</th>"
        "<th>sample failing values</th></tr>"
    )
    rows = "".join(_rule_row(r, rule_letters.get((validator, r.rule), 0)) for r in ordered)
    return (
        f"<section><h2>{_e(validator)}</h2><div class=meta>tool: {_e(tools)} · "
        f"{len(rules)} checks, {len(failing)} failing</div>"
        f"<table>{head}{rows}</table></section>"
    )


def _rule_row(r: RuleStats, dead_lettered: int) -> str:
    unit = {(True, True): "row", (True, False): "rows", (False, True): "batch"}.get(
        (r.row_level, r.checked == 1), "batches"
    )
    rate = _rate(r)
    outcome = _outcome(r)
    sample = (
        ", ".join(f"<code>{_e(_short(v))}</code>" for v in r.sample)
        if r.sample
        else "<span class=empty>—</span>"
    )
    level = "row-level" if r.row_level else "batch-level"
    return (
        f"<tr><td><code>{_e(r.rule)}</code></td><td>{_e(r.column or '—')}</td>"
        f"<td class=level>{level}</td><td><code>{_e(r.on_fail)}</code></td><td>{outcome}</td>"
        f"<td class=n>{r.checked:,} {unit}</td><td class=n>{r.failed:,}</td>"
        f"<td class=n>{rate:.2%}<div class=bar><i style='width:{min(100.0, rate * 100):.1f}%'>"
        f"</i></div></td><td class=n>{r.batches_failed:,}</td>"
        f"<td class=n>{dead_lettered:,}</td><td class=sample>{sample}</td></tr>"
    )


def _other_letters(letters: dict[str, int]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td><td class=n>{v:,}</td></tr>"
        for k, v in sorted(letters.items())
    )
    return (
        "<section><h2>Other dead letters</h2><div class=meta>rows dead-lettered outside "
        "validation (decoding, casts, transforms, loads)</div>"
        f"<table><tr><th>stage:reason</th><th class=n>rows</th></tr>{rows}</table></section>"
    )


# -- helpers --------------------------------------------------------------------------


def _split_dead_letters(
    by: dict[str, int],
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Dead-letter counts of validation stages by (validator, rule); the others by key.

    The runner keys them ``validate.<index>.<validator>:<rule>``.
    """
    rules: dict[tuple[str, str], int] = {}
    others: dict[str, int] = {}
    for key, count in by.items():
        stage, _, rule = key.partition(":")
        parts = stage.split(".", 2)
        if parts[0] == "validate" and len(parts) == 3 and rule:
            rules[(parts[2], rule)] = rules.get((parts[2], rule), 0) + count
        else:
            others[key] = count
    return rules, others


def _rate(r: RuleStats) -> float:
    if not r.checked:
        return 0.0
    return (r.failed if r.row_level else r.batches_failed) / r.checked


def _outcome(r: RuleStats) -> str:
    if not r.failed:
        return "<span class='pill p-pass'>passed</span>"
    label, cls = {
        "dlq": ("dead-lettered", "p-dlq"),
        "warn": ("warned", "p-warn"),
        "fail": ("failed the run", "p-fail"),
    }.get(r.on_fail, (r.on_fail, "p-dlq"))
    return f"<span class='pill {cls}'>{_e(label)}</span>"


def _short(value: Any, limit: int = 80) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(timestamp: float) -> str:
    if not timestamp:
        return "—"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
