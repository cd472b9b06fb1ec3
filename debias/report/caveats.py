""""Read this first": what a reader must know before trusting the headline, built from the report.

`build_caveats(report)` reads only what the report dict holds (training summaries, each arm's
`model` section, the rewrite audit and its independent check, the held-out perplexity source, the
evaluation settings) and returns `[{"topic", "text", "values"}]`: a sentence for people and the
numbers it cites for tools. A topic whose inputs the report lacks (no training in a multi-model
evaluation, no rewrite in a control run) is left out, never filled with words about another run.
"""

from __future__ import annotations

from typing import Any, Mapping

from debias.report.reading import arm_names, format_number, format_p, interval, p_floor

PYTHIA_PRECISION = "fp16 with dynamic loss scaling"   # docs/facts.md, "The training recipe"
PYTHIA_GELU = "tanh"                                 # docs/facts.md, "Model architecture"


def build_caveats(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every caveat the report's contents support, in reading order."""
    training = {arm: s for arm, s in (report.get("training") or {}).items() if isinstance(s, Mapping)}
    models = {arm: report["arms"][arm].get("metrics", {}).get("model") for arm in arm_names(report)}
    models = {arm: m for arm, m in models.items() if isinstance(m, Mapping)}
    found = [
        _optimizer_state(training),
        _training_precision(training),
        _gelu(training, models),
        _evaluation_dtype(models),
        _rewrite_skips(report.get("rewrite") or {}),
        _rewrite_check(report.get("rewrite") or {}),
        _heldout_source(report),
        _intervals(report, training),
    ]
    return [c for c in found if c]


def _caveat(topic: str, text: str, **values: Any) -> dict[str, Any]:
    return {"topic": topic, "text": text, "values": values}


def _per_arm(described: Mapping[str, str]) -> str:
    """"Both arms (control, treatment): X" when every arm says the same, else "control: X; treatment: Y"."""
    texts = set(described.values())
    if len(texts) == 1:
        every = "Both arms" if len(described) == 2 else ("The arm" if len(described) == 1 else "Every arm")
        return f"{every} ({', '.join(described)}): {texts.pop()}"
    return "; ".join(f"{arm}: {text}" for arm, text in described.items())


def _optimizer_state(training: Mapping[str, Mapping]) -> dict | None:
    states = {arm: s.get("optimizer_state") for arm, s in training.items() if isinstance(s.get("optimizer_state"), Mapping)}
    if not states:
        return None

    def describe(state: Mapping) -> str:
        kind = state.get("treatment")
        if kind == "imported":
            return (f"Adam's moments imported from {state.get('source')} (checkpoint step {state.get('checkpoint_step')}, "
                    f"Adam step {state.get('adam_step')}), as Pythia resumed them")
        if kind == "warmup":
            return f"a fresh AdamW whose moments were warmed by {state.get('warmup_steps')} zero-learning-rate steps"
        return "a fresh AdamW (Hugging Face checkpoints hold weights only)"

    text = f"{_per_arm({arm: describe(s) for arm, s in states.items()})}."
    if any(s.get("treatment") != "imported" for s in states.values()):
        text += (" Pythia resumed its optimizer state; a fresh one makes the first updates of every arm differ from "
                 "Pythia's own continuation. When every trained arm starts the same way, a paired effect between them "
                 "does not come from it, but its size may differ from a faithful continuation "
                 "(trainer.optimizer_state=warmup, or a path to GPT-NeoX ZeRO shards of the window's first step).")
    return _caveat("optimizer state", text, **{arm: dict(s) for arm, s in states.items()})


def _training_precision(training: Mapping[str, Mapping]) -> dict | None:
    precisions = {arm: s.get("precision") for arm, s in training.items() if s.get("precision")}
    if not precisions:
        return None

    def describe(arm: str) -> str:
        precision, scale = precisions[arm], training[arm].get("loss_scale")
        if precision == "fp16" and isinstance(scale, Mapping):
            final = scale.get("final") if isinstance(scale.get("final"), Mapping) else {}
            skipped = final.get("skipped_steps")
            return ("fp16 with dynamic loss scaling, as Pythia" +
                    (f" ({skipped} overflowing steps skipped, final scale {format_number(final.get('scale'))})"
                     if skipped is not None else ""))
        return {"bf16": "bf16 autocast (fp32 weights and optimizer)", "fp32": "fp32"}.get(precision, str(precision))

    text = f"{_per_arm({arm: describe(arm) for arm in precisions})}. Pythia trained in {PYTHIA_PRECISION}"
    text += "." if set(precisions.values()) == {"fp16"} else "; rounding in the updates differs from Pythia's."
    return _caveat("training precision", text, pythia=PYTHIA_PRECISION, **precisions)


def _gelu(training: Mapping[str, Mapping], models: Mapping[str, Mapping]) -> dict | None:
    used = {f"{arm} (training)": s["gelu"] for arm, s in training.items() if s.get("gelu")}
    used.update({f"{arm} (evaluation)": m["gelu"] for arm, m in models.items() if m.get("gelu")})
    if not used:
        return None
    variants = set(used.values())
    if variants == {PYTHIA_GELU}:
        text = ("The tanh approximation in every training and evaluation pass, as Pythia trained "
                "(a Hugging Face config.json says exact GELU, so transformers' scores of the same weights differ slightly).")
    else:
        listed = "; ".join(f"{where}: {gelu}" for where, gelu in used.items())
        text = f"{listed}. Pythia trained with the {PYTHIA_GELU} approximation; a different variant shifts every score."
    return _caveat("GELU variant", text, pythia=PYTHIA_GELU, **used)


def _evaluation_dtype(models: Mapping[str, Mapping]) -> dict | None:
    described = {}
    for arm, model in models.items():
        dtype = model.get("dtype")
        if isinstance(dtype, Mapping):
            described[arm] = (f"weights {dtype.get('weights')}, body {dtype.get('body')}, output layer and "
                              f"log-softmax {dtype.get('output_layer')} on {model.get('device', 'an unrecorded device')}")
        elif dtype:
            described[arm] = str(dtype)
    if not described:
        return None
    return _caveat("evaluation precision", f"{_per_arm(described)}.",
                   **{arm: models[arm].get("dtype") for arm in described})


def _rewrite_skips(rewrite: Mapping[str, Any]) -> dict | None:
    audit = rewrite.get("audit")
    if not isinstance(audit, Mapping):
        return None
    skipped = audit.get("skipped_tokens") or audit.get("skips") or {}
    spans = audit.get("code_spans") or {}
    changed = audit.get("changed_tokens")
    parts = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    text = (f"{changed} tokens changed; {sum(skipped.values())} tokens of matched pronoun forms left "
            "unchanged by policy" + (f" ({parts})" if parts else ""))
    if spans:
        text += f"; code spans left alone: {spans.get('spans', 0)} ({spans.get('tokens', 0)} tokens)"
    remaining = audit.get("remaining_source_pronouns")
    if isinstance(remaining, Mapping) and "total" in remaining:
        text += (f". {remaining['total']} whole-word source pronouns remain in the treatment's rows, which it "
                 "trained on as written")
        if remaining.get("unaccounted"):
            text += f" ({remaining['unaccounted']} of them without a recorded reason)"
    text += "."
    return _caveat("rewrite policy skips", text, changed_tokens=changed, skipped_tokens=dict(skipped),
                   code_spans=dict(spans))


def _rewrite_check(rewrite: Mapping[str, Any]) -> dict | None:
    check = rewrite.get("independent_check")
    if not rewrite.get("audit"):
        return None
    if not isinstance(check, Mapping):
        return _caveat("rewrite check", "No independent re-reading of the rewritten rows is in this "
                                        "report (python -m debias.rewrite verify <rewrite folder> runs one).")

    def rate(name: str) -> str:
        value, ci = check.get(name), interval(check.get(f"{name}_ci95"))
        if value is None:
            return "not measured"
        return format_number(value) + (f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else "")

    text = (f"Re-read independently of the rewriter (a seeded sample of {check.get('sample_rows')} rows, "
            f"{check.get('changed_words')} changed words): precision {rate('precision')} "
            f"({check.get('correct_changes')} of {check.get('changed_words')} changes correct), residual rate "
            f"{rate('residual_rate')} ({check.get('residual')} of {check.get('source_pronouns')} source pronouns left), "
            f"{check.get('suspicious_count', 0)} suspicious changes.")
    keep = ("sample_rows", "changed_words", "correct_changes", "precision", "precision_ci95", "source_pronouns",
            "residual", "residual_rate", "residual_rate_ci95", "suspicious_count")
    return _caveat("rewrite check", text, **{k: check.get(k) for k in keep if k in check})


def _heldout_source(report: Mapping[str, Any]) -> dict | None:
    sources = {}
    for arm in arm_names(report):
        section = report["arms"][arm].get("metrics", {}).get("perplexity")
        if isinstance(section, Mapping) and section.get("source"):
            tokens = section.get("tokens")
            sources[arm] = f"{section['source']}" + (f", {tokens} tokens" if tokens is not None else "")
    if not sources:
        return None
    return _caveat("held-out perplexity source", f"{_per_arm(sources)}.", **sources)


def _intervals(report: Mapping[str, Any], training: Mapping[str, Mapping]) -> dict:
    settings = (report.get("config") or {}).get("eval") or {}
    resamples, seed = settings.get("bootstrap_samples"), settings.get("seed")
    trained = ", ".join(training) if training else ""
    text = ("Intervals and p-values reflect item sampling only: "
            + (f"each trained arm ({trained}) is ONE training run" if trained else "each model is ONE trained model")
            + ", so run-to-run training variance (seed, data order) is not in them and a difference between arms "
              "may partly be a difference between two runs.")
    if resamples is not None:
        text += f" Bootstrap: {resamples} resamples (seed {seed}); a bootstrap p is at most {format_p(p_floor(resamples))} at its floor."
    return _caveat("one run per arm", text, bootstrap_samples=resamples, bootstrap_seed=seed,
                   training_runs_per_arm=1 if training else None)
