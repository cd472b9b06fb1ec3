"""The tables of a run report, built once from the report dict and rendered as Markdown or HTML.

Reading order (docs/architecture.md, "debias.report"): the headline (the pre-declared primary test, then
blanket shift, LM quality and the manipulation check, per arm and paired), then every declared
metric, the breakdowns, every paired test, the rewrite audit and the training runs.
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from debias.evaluate import PRIMARY_METRIC, Better, HeadlineRole, metric_declarations
from debias.report.reading import (HOLM_NOTE, arm_metrics, arm_names, better_text, breakdown_metrics, comparison_label,
                                   declaration_or_none, declared_metrics, format_number, format_p, headline_rows,
                                   interval, is_number, p_note, primary_comparison, report_paired_results,
                                   split_comparison)

MAX_SAMPLES = 10  # before/after snippets of the rewrite shown


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def markdown(self) -> str:
        return markdown_table(self.header, self.rows)

    def html(self) -> str:
        return html_table(self.header, self.rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{html.escape(str(c))}</td>" if i else f"<td>{html.escape(str(c))}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---- what ran ------------------------------------------------------------------------------------

def run_lines(report: Mapping[str, Any]) -> list[str]:
    """One line each for what ran and the model (the top of both formats): an intervention run, or
    named models compared with their reference (`run.kind == "models"`)."""
    run, model = report.get("run") or {}, report.get("model") or {}
    lines = []
    if run.get("kind") == "models":
        lines.append(f"models: {', '.join(run.get('models') or [])} (reference {run.get('reference')})")
    elif run:
        lines.append("intervention: " + ", ".join(f"{k}={run[k]}" for k in sorted(run)
                                                  if not isinstance(run[k], (dict, list))))
    if model:
        lines.append("model: " + ", ".join(f"{k}={model[k]}" for k in sorted(model)
                                           if not isinstance(model[k], (dict, list))))
    return lines


# ---- headline ------------------------------------------------------------------------------------

def primary_result(report: Mapping[str, Any]):
    """The pre-declared primary test's result in the primary comparison, or None."""
    primary = primary_comparison(report)
    if primary is None:
        return None
    return report_paired_results(report)[primary].get(PRIMARY_METRIC)


def primary_sentence(report: Mapping[str, Any]) -> str:
    """The one pre-declared test, in a sentence, with which way it went (or why it is missing)."""
    declaration = declaration_or_none(PRIMARY_METRIC)
    what = f"{PRIMARY_METRIC} ({declaration.description})" if declaration else PRIMARY_METRIC
    primary = primary_comparison(report)
    if primary is None:
        return (f"Primary metric, declared before the run: {what}. This report names no primary comparison, "
                "so no single pre-declared test applies; every comparison below is secondary.")
    label = comparison_label(primary, arm_names(report))
    result = primary_result(report)
    if result is None:
        return (f"Primary test, declared before the run: {what}, {label}. Not measured in this run "
                "(its benchmark was not evaluated, or its items were not shared by both arms).")
    a, b = split_comparison(primary, arm_names(report))
    values = (f" ({b} {format_number(result.b)}, {a} {format_number(result.a)})"
              if result.a is not None and result.b is not None else "")
    sentence = (f"Primary test, declared before the run: {what}, {label} = {result.effect.cell(signed=True)}{values}, "
                f"{result.test} p={format_p(result.p)}, Holm-adjusted p={format_p(result.p_holm)}, n={result.n}.")
    return sentence + _direction(declaration, result, a, b)


def _direction(declaration, result, a: str, b: str) -> str:
    """Which way the primary effect went, in words, from its declaration and its interval."""
    if declaration is None or result.a is None or result.b is None:
        return ""
    if declaration.better is Better.CLOSER_TO_IDEAL:
        gap_a, gap_b = abs(result.a - declaration.ideal), abs(result.b - declaration.ideal)
        moved = (f" {a} is {'closer to' if gap_a < gap_b else 'farther from'} the no-bias value "
                 f"{declaration.ideal:g} than {b}")
    elif declaration.better in (Better.HIGHER, Better.LOWER):
        moved = f" {a} is {'higher' if result.a > result.b else 'lower'} than {b} ({declaration.better.value} is better)"
    else:
        return ""
    ci = result.diff_ci95
    sure = ("" if ci is None else "; the interval of the difference excludes 0" if ci[0] > 0 or ci[1] < 0
            else "; the interval of the difference includes 0")
    return f" Reading:{moved}{sure}."


def shift_sentence(report: Mapping[str, Any]) -> str | None:
    """The blanket shift in the primary comparison, beside the primary test (secondary tests)."""
    primary = primary_comparison(report)
    if primary is None:
        return None
    a, b = split_comparison(primary, arm_names(report))
    results = report_paired_results(report)[primary]
    cells = [f"{d.key} {r.cell()}" for d in metric_declarations(headline=HeadlineRole.BLANKET_SHIFT)
             if (r := results.get(d.key))]
    if not cells:
        return None
    return (f"Blanket shift, same comparison (secondary): {'; '.join(cells)}. "
            f"A positive difference: {a} prefers the feminine form "
            f"more than {b} does, over both stereotype groups alike; threshold metrics (stereotype_accuracy, "
            "pct_stereotype) move with it, the association does not.")


def headline_table(report: Mapping[str, Any]) -> Table:
    """The headline metrics (association, blanket shift, LM quality, manipulation) per arm with
    intervals, and each comparison's paired effect with p and p_holm (the primary comparison first)."""
    arms, comparisons = arm_names(report), list(report_paired_results(report))
    header = ["role", "metric", "better", *arms, *[f"{comparison_label(c, arms)} (paired)" for c in comparisons]]
    table = Table(header)
    for row in headline_rows(report):
        name = row.declaration.key + (" (primary)" if row.declaration.primary else "")
        table.rows.append([row.role.value, name, better_text(row.declaration),
                           *[row.arms[arm].cell() if arm in row.arms else "" for arm in arms],
                           *[row.paired[c].cell() if c in row.paired else "" for c in comparisons]])
    return table


def headline_notes(report: Mapping[str, Any]) -> list[str]:
    """What the headline table's columns mean, the Holm families and the bootstrap p floor."""
    arms, primary = arm_names(report), primary_comparison(report)
    declared = f"{PRIMARY_METRIC}, {comparison_label(primary, arms)}" if primary else PRIMARY_METRIC
    notes = ["Cells: value [95% CI]. Paired: A - B on the items both arms were scored on, with the declared test's p. "
             + HOLM_NOTE,
             f"The primary metric ({declared}) was declared before the run; every other row is secondary."]
    families = [f"{comparison_label(c, arms)} {len(results)}"
                for c, results in report_paired_results(report).items() if results]
    if families:
        notes.append("Paired tests per Holm family: " + ", ".join(families) + ".")
        resamples = ((report.get("config") or {}).get("eval") or {}).get("bootstrap_samples")
        if resamples:
            notes.append(p_note(resamples))
    return notes


def headline_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline in report.json: the primary test and the headline rows (derived from `arms`
    and `comparisons`, so tools need not re-derive the layout)."""
    result = primary_result(report)
    rows = [{
        "metric": row.declaration.key, "role": row.role.value, "better": row.declaration.better.value,
        "ideal": row.declaration.ideal, "primary": row.declaration.primary,
        "arms": {arm: {"value": m.value, "ci95": list(m.ci95) if m.ci95 else None, "n": m.n}
                 for arm, m in row.arms.items()},
        "paired": {c: {"diff": r.diff, "diff_ci95": list(r.diff_ci95) if r.diff_ci95 else None, "test": r.test,
                       "p": r.p, "p_holm": r.p_holm, "n": r.n} for c, r in row.paired.items()},
    } for row in headline_rows(report)]
    return {
        "primary_metric": PRIMARY_METRIC,
        "primary_comparison": primary_comparison(report),
        "primary": None if result is None else {
            "diff": result.diff, "diff_ci95": list(result.diff_ci95) if result.diff_ci95 else None,
            "test": result.test, "p": result.p, "p_holm": result.p_holm, "n": result.n},
        "multiplicity": HOLM_NOTE,
        "rows": rows,
    }


def heldout_lines(report: Mapping[str, Any]) -> list[str]:
    """Where the held-out perplexity's tokens came from (`perplexity.source`), once per distinct source."""
    sources: dict[str, list[str]] = {}
    for arm, sections in arm_metrics(report).items():
        section = sections.get("perplexity")
        if isinstance(section, Mapping) and section.get("source"):
            tokens = f" ({section['tokens']} tokens)" if is_number(section.get("tokens")) else ""
            sources.setdefault(f"{section['source']}{tokens}", []).append(arm)
    if len(sources) == 1:
        return [f"perplexity.source: {next(iter(sources))}"]
    return [f"perplexity.source ({', '.join(arms)}): {source}" for source, arms in sources.items()]


# ---- full tables ---------------------------------------------------------------------------------

def declared_table(report: Mapping[str, Any]) -> Table:
    """Every declared metric per arm."""
    arms, by_arm = arm_names(report), arm_metrics(report)
    read = {arm: declared_metrics(by_arm[arm]) for arm in arms}
    table = Table(["metric", "what it measures", "better", "n", *arms])
    for declaration in metric_declarations():
        cells = [read[arm].get(declaration.key) for arm in arms]
        if any(cells):
            table.rows.append([declaration.key, declaration.description, better_text(declaration), _n(cells),
                               *[m.cell() if m else "" for m in cells]])
    return table


def breakdown_table(report: Mapping[str, Any]) -> Table:
    """Every other statistic with an interval (breakdowns; not tested between arms)."""
    arms, by_arm = arm_names(report), arm_metrics(report)
    read = {arm: breakdown_metrics(by_arm[arm]) for arm in arms}
    table = Table(["metric", "n", *arms])
    for name in sorted({name for metrics in read.values() for name in metrics}):
        cells = [read[arm].get(name) for arm in arms]
        table.rows.append([name, _n(cells), *[m.cell() if m else "" for m in cells]])
    return table


def _n(cells) -> str:
    ns = sorted({m.n for m in cells if m is not None and m.n is not None})
    return "/".join(map(str, ns))


def paired_table(report: Mapping[str, Any]) -> Table:
    """Every paired test: the comparison, the metric, both arms' values, A - B, the test, p, p_holm."""
    table = Table(["comparison", "metric", "A", "B", "A - B [95% CI]", "test", "p", "p_holm", "n"])
    for comparison, results in report_paired_results(report).items():
        label = comparison.replace("_", " ")  # "treatment vs control": A is the first arm named
        for r in results.values():
            test = r.test
            if r.mcnemar:
                test += f" (only A {r.mcnemar.get('only_a')}, only B {r.mcnemar.get('only_b')})"
            name = r.key + (" (primary)" if r.primary and comparison == primary_comparison(report) else "")
            table.rows.append([label, name, format_number(r.a), format_number(r.b), r.effect.cell(signed=True), test,
                               format_p(r.p), format_p(r.p_holm), "" if r.n is None else str(r.n)])
    return table


# ---- rewrite audit -------------------------------------------------------------------------------

def rewrite_lines(report: Mapping[str, Any]) -> list[str]:
    """The audit's totals and the pass's settings, a few lines."""
    rewrite = report.get("rewrite") or {}
    audit, manifest = rewrite.get("audit") or {}, rewrite.get("manifest") or {}
    if not audit:
        return []
    rows = audit.get("window_rows") or manifest.get("rows")
    lines = [f"{audit.get('changed_tokens')} tokens changed in {audit.get('rows_touched')} of {audit.get('rows')} rows "
             f"({audit.get('tokens')} tokens" + (f", window rows {rows[0]}..{rows[1]}" if rows else "") + ")"
             + (f"; {audit['row_edge_rewrites']} at a row's first or last token" if audit.get("row_edge_rewrites") else "")]
    if audit.get("derived_from"):
        lines.append(f"rows served from a larger pass: {audit['derived_from']}")
    settings = [f"{k}={manifest[k]}" for k in ("direction", "fraction", "resolver", "seed", "rewriter_version")
                if k in manifest]
    if settings:
        lines.append("pass: " + ", ".join(settings))
    if isinstance(audit.get("decisions"), Mapping) and audit["decisions"]:
        lines.append("resolver decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(audit["decisions"].items())))
    remaining = audit.get("remaining_source_pronouns")
    if isinstance(remaining, Mapping) and "total" in remaining:
        by_reason = remaining.get("by_reason") or {}
        lines.append(f"whole-word source pronouns left in the window: {remaining['total']}"
                     + (f" ({', '.join(f'{k} {v}' for k, v in sorted(by_reason.items()))})" if by_reason else "")
                     + (f"; {remaining['unaccounted']} without a recorded reason" if remaining.get("unaccounted") else ""))
    return lines


def forms_table(report: Mapping[str, Any]) -> Table:
    """Each rewritten form (source -> target) with its count, most frequent first."""
    changes = ((report.get("rewrite") or {}).get("audit") or {}).get("changes") or {}
    table = Table(["form (source -> target)", "count", "tokens"])
    entries = [(form, v.get("count", 0), v.get("tokens", v.get("count", 0))) if isinstance(v, Mapping) else (form, v, v)
               for form, v in changes.items()]
    for form, count, tokens in sorted(entries, key=lambda e: (-e[1], e[0])):
        table.rows.append([form, str(count), str(tokens)])
    return table


def skips_table(report: Mapping[str, Any]) -> Table:
    """Source-pronoun tokens left unchanged, by policy reason, with the forms each reason held."""
    audit = (report.get("rewrite") or {}).get("audit") or {}
    by_reason = audit.get("skipped_tokens") or audit.get("skips") or {}
    forms: dict[str, list[str]] = {}
    for key, count in (audit.get("skipped_forms") or {}).items():  # "<reason>: '<form>'"
        reason, _, form = str(key).partition(": ")
        forms.setdefault(reason, []).append(f"{form} {count}")
    table = Table(["reason", "tokens left unchanged", "forms"])
    for reason, count in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        table.rows.append([reason, str(count), ", ".join(forms.get(reason, []))])
    spans = audit.get("code_spans")
    if isinstance(spans, Mapping):
        table.rows.append(["code spans (documents read as source code)", str(spans.get("tokens", 0)),
                           f"{spans.get('spans', 0)} spans"])
    return table


def _mark_changes(before: str, after: str) -> tuple[str, str]:
    """The two snippets with the words that differ in [brackets]; newlines shown as \\n."""
    a, b = re.split(r"(\s+)", before), re.split(r"(\s+)", after)
    marked_a, marked_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        left, right = "".join(a[i1:i2]), "".join(b[j1:j2])
        marked_a.append(left if op == "equal" else f"[{left}]" if left else "")
        marked_b.append(right if op == "equal" else f"[{right}]" if right else "")
    return tuple("".join(m).replace("\n", "\\n") for m in (marked_a, marked_b))


def samples_table(report: Mapping[str, Any]) -> Table:
    """Up to ten before/after snippets from the audit's sample, changed words in [brackets]."""
    sample = ((report.get("rewrite") or {}).get("audit") or {}).get("sample") or []
    table = Table(["row", "before", "after"])
    for entry in sample[:MAX_SAMPLES]:
        if isinstance(entry, Mapping) and "before" in entry and "after" in entry:
            before, after = _mark_changes(str(entry["before"]), str(entry["after"]))
            table.rows.append([str(entry.get("row", "")), before, after])
    return table


def check_table(report: Mapping[str, Any]) -> Table:
    """The rewrite's independent check (debias.rewrite.checker), when the report holds it."""
    check = (report.get("rewrite") or {}).get("independent_check")
    table = Table(["measure", "value [95% CI]", "counts"])
    if not isinstance(check, Mapping):
        return table
    rates = (("precision", f"{check.get('correct_changes')} of {check.get('changed_words')} changed words correct"),
             ("residual_rate", f"{check.get('residual')} of {check.get('source_pronouns')} source pronouns left"))
    for name, counts in rates:
        if check.get(name) is not None:
            ci = interval(check.get(f"{name}_ci95"))
            cell = format_number(check[name]) + (f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else "")
            table.rows.append([name.replace("_", " "), cell, counts])
    table.rows.append(["suspicious changes", str(check.get("suspicious_count", 0)),
                       f"sample of {check.get('sample_rows')} rows, seed {check.get('seed')}"])
    return table


# ---- training ------------------------------------------------------------------------------------

def training_table(report: Mapping[str, Any]) -> Table:
    """One column per trained arm: steps, loss, precision, optimizer state, throughput."""
    training = {arm: s for arm, s in (report.get("training") or {}).items() if isinstance(s, Mapping)}
    timing = (report.get("timing") or {}).get("training") or {}
    if not training:
        return Table([])
    arms = [a for a in arm_names(report) if a in training] + sorted(a for a in training if a not in report.get("arms", {}))

    def optimizer(state: Any) -> str:
        if not isinstance(state, Mapping):
            return str(state or "")
        extra = {k: v for k, v in state.items() if k != "treatment"}
        return str(state.get("treatment")) + (f" ({', '.join(f'{k} {v}' for k, v in extra.items())})" if extra else "")

    def precision(s: Mapping) -> str:
        scale = s.get("loss_scale")
        final = scale.get("final") if isinstance(scale, Mapping) and isinstance(scale.get("final"), Mapping) else None
        text = str(s.get("precision", ""))
        if final:
            text += f" (loss scale {format_number(final.get('scale'))}, {final.get('skipped_steps')} steps skipped)"
        return text

    rows = [
        ("steps", lambda s, t: f"{s.get('steps')} ({s.get('start_step')}..{s.get('end_step')})"),
        ("tokens", lambda s, t: str(s.get("tokens", ""))),
        ("final loss", lambda s, t: format_number(s.get("final_loss"), 4)),
        ("mean loss", lambda s, t: format_number(s.get("mean_loss"), 4)),
        ("precision", lambda s, t: precision(s)),
        ("optimizer state", lambda s, t: optimizer(s.get("optimizer_state"))),
        ("learning rate", lambda s, t: f"{format_number(s.get('lr_first'))} -> {format_number(s.get('lr_last'))}"),
        ("engine", lambda s, t: f"{s.get('engine')} on {s.get('device')} x{s.get('world_size')}"),
        ("micro batch x accumulation", lambda s, t: f"{s.get('micro_batch')} x {s.get('grad_accum')}"),
        ("GELU", lambda s, t: str(s.get("gelu", ""))),
        ("tokens/s (timing)", lambda s, t: f"{t['tokens_per_s']:,.0f}" if is_number(t.get("tokens_per_s")) else ""),
        ("wall time, s (timing)", lambda s, t: f"{t['wall_seconds']:.1f}" if is_number(t.get("wall_seconds")) else ""),
    ]
    table = Table(["", *arms])
    for label, cell in rows:
        table.rows.append([label, *[cell(training[arm], timing.get(arm) or {}) for arm in arms]])
    return table
