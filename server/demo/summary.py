"""Turn the demo's outcome into a summary a person reads at a glance (terminal and Markdown)."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from autohas_edge.server.demo.report import markdown_table, plot_encodings, plot_user_accuracy
from autohas_edge.server.demo.run import DemoOutcome


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def sections(outcome: DemoOutcome) -> list[tuple[str, str]]:
    """(title, Markdown body) pairs, in reading order."""
    result = outcome.job.result
    searched = result.search_seconds + result.race_seconds
    ratio = searched / max(result.retrain_seconds, 1e-9)
    return [
        ("Derived model", _model_section(outcome)),
        ("Artifacts", _artifact_section(outcome)),
        ("Consent and data use", _consent_section(outcome)),
        ("Personalization on the devices", _user_section(outcome)),
        (
            "Timing",
            markdown_table(
                ["stage", "seconds"],
                [[k, f"{v:.1f}"] for k, v in outcome.seconds.items()]
                + [
                    ["search (engine)", f"{result.search_seconds:.1f}"],
                    ["training race (engine)", f"{result.race_seconds:.1f}"],
                    ["one training run of the derived model", f"{result.retrain_seconds:.1f}"],
                    ["(search + race) / one training run", f"{ratio:.2f}x"],
                ],
            ),
        ),
    ]


def _model_section(outcome: DemoOutcome) -> str:
    result = outcome.job.result
    rows = [[f"arch: {k}", v] for k, v in sorted(result.architecture.items())]
    rows += [[f"hp: {k}", v] for k, v in sorted(result.hyperparameters.items())]
    rows += [
        ["parameters", f"{result.params:,}"],
        ["global test accuracy", _pct(result.test_accuracy)],
    ]
    return markdown_table(["", "value"], rows)


def _artifact_section(outcome: DemoOutcome) -> str:
    rows = [
        [a["format"], a["role"], a["file"], f"{a['bytes'] / 1024:.1f} KiB", a.get("batch", "")]
        for a in outcome.manifest.get("artifacts", [])
    ]
    return markdown_table(["format", "role", "file", "size", "batch"], rows)


def _consent_section(outcome: DemoOutcome) -> str:
    rows = []
    for d in outcome.devices:
        o = d.outcome
        status = "revoked" if o.revoked else ("consented" if o.consented else "declined")
        rows.append([o.user_id, o.app_id, status, o.uploaded, o.used_by_job])
    leaked = [
        d.outcome.user_id
        for d in outcome.devices
        if d.outcome.used_by_job and (d.outcome.revoked or not d.outcome.consented)
    ]
    proof = (
        "None of the decliners' or the revoker's examples were used by the job (from its audit)."
        if not leaked
        else f"VIOLATION: the job used data of {', '.join(leaked)}"
    )
    total = (
        f"The job used {outcome.audit.total_examples} examples of {len(outcome.audit.users)} users."
    )
    revoked = f"Revoking consent deleted {outcome.revoked_deleted} stored examples at once."
    return "\n".join(
        [
            markdown_table(["user", "app", "consent", "uploaded", "used by job"], rows),
            "",
            total,
            revoked,
            proof,
        ]
    )


def _user_section(outcome: DemoOutcome) -> str:
    rows = []
    for d in outcome.devices:
        o = d.outcome
        rows.append(
            [
                o.user_id,
                d.runtime,
                _pct(o.accuracy_before),
                _pct(o.accuracy_after),
                "kept previous" if o.kept_previous else "new head",
                f"{(o.fine_tune_seconds or 0) * 1000:.0f} ms",
            ]
        )
    before = [d.outcome.accuracy_before or 0 for d in outcome.devices]
    after = [d.outcome.accuracy_after or 0 for d in outcome.devices]
    worse = sum(a < b for a, b in zip(after, before, strict=True))
    line = (
        f"Mean held-out accuracy {_pct(mean(before))} -> {_pct(mean(after))} "
        f"({100 * (mean(after) - mean(before)):+.1f} points); users worse after fine-tuning: {worse}."
    )
    return (
        markdown_table(
            ["user", "runtime", "global model", "after fine-tuning", "head", "fine-tune time"], rows
        )
        + "\n\n"
        + line
    )


def write_report(outcome: DemoOutcome, report_dir: Path) -> Path:
    """Write report_dir/summary.md and its PNG plots; returns the Markdown path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_encodings(outcome.history, report_dir / "encodings.png")
    plot_user_accuracy([d.outcome for d in outcome.devices], report_dir / "user_accuracy.png")
    body = ["# autohas-edge demo report", ""]
    for title, text in sections(outcome):
        body += [f"## {title}", "", text, ""]
    body += [
        "![encodings over the search](encodings.png)",
        "",
        "![per-user accuracy](user_accuracy.png)",
        "",
    ]
    path = report_dir / "summary.md"
    path.write_text("\n".join(body))
    return path


def print_summary(outcome: DemoOutcome) -> None:
    """Print the summary to the terminal."""
    for title, text in sections(outcome):
        print(f"\n== {title} ==\n{text}")
