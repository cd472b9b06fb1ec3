"""Reports: one run's report.json / report.md / report.html, and comparisons across runs.

    write_run_report(run_dir, report)      # report.{json,md,html} + plots/
    compare_runs([run or multirun dirs], out_dir)   # comparison.{md,html,csv} + plots/

The report dict (what `write_run_report` takes; `assemble.run_report` builds it for the
intervention pipeline, other apps such as a multi-model evaluation build their own). Only `arms`
is required; every other section is rendered when present and skipped when absent.

  arms                {arm name: {"metrics": {benchmark: section, ..., "model": {...}}, "key"?, "model"?}}
                      Arm names are free: baseline/control/treatment for the intervention, model
                      labels for a multi-model evaluation. `metrics` is `debias.evaluate.
                      evaluate_model`'s first result: sections in the report convention (value,
                      `<name>_ci95`, `<name>_p`, `n` / `<name>_n`); `metrics.model.dtype` =
                      {weights, body, output_layer}, `metrics.perplexity.source` / `tokens`.
  arm_order           [arm name, ...] (optional): reading order, the first is the reference;
                      default baseline, control, treatment, then the others by name.
  comparisons         {"<a>_vs_<b>": debias.evaluate.compare_items(items[a], items[b])}, i.e.
                      {benchmark: {metric name: {a, b, diff, diff_ci95, diff_p, test, p, p_holm,
                      n, mcnemar?, better, headline, primary}}}; p_holm is Holm within that one
                      comparison.
  primary_comparison  "<a>_vs_<b>" (optional): the comparison whose PRIMARY_METRIC result is the
                      study's one pre-declared test (the intervention: "treatment_vs_control";
                      a control-only run: "control_vs_baseline"). Absent: no primary test.
  run                 {direction, ratio, fraction, start_step, end_step, num_steps, primary_arm}
                      from the run's Window (optional).
  model, data         identities and checksums (optional); comparisons group runs by them.
  config              the resolved settings (optional); `config.eval.bootstrap_samples` / `seed`
                      are cited in the caveats.
  rewrite             {audit, manifest, stream, first_row, independent_check?} (optional): the
                      rewrite audit (`changes`, `skipped_tokens`, `skipped_forms`, `code_spans`,
                      `sample`, ...) and the checker's result (precision, residual_rate with
                      `_ci95`).
  training            {arm: the trainer's summary.json + loss_curve} (optional): precision,
                      loss_scale, optimizer_state, gelu, final_loss, steps, ...
  timing              everything that differs between identical runs (stage durations, the
                      trainer's wall_seconds / tokens_per_s under `timing.training.<arm>`),
                      put there by name where it is produced. Nothing else may differ.

Derived by `write_run_report` and added to report.json: `headline` (the primary test and, per
headline metric, each arm's value and each comparison's paired effect) and `caveats` ("Read this
first": [{topic, text, values}], `build_caveats`). Which numbers are metrics, which way is
better and which are headlines comes from `debias.evaluate.metric_declarations()`.
"""

from debias.report import assemble
from debias.report.caveats import build_caveats
from debias.report.comparison import compare_runs, load_report
from debias.report.reading import Metric, PairedResult, declared_metrics, paired_results, read_metric
from debias.report.run_report import write_run_report

__all__ = ["Metric", "PairedResult", "assemble", "build_caveats", "compare_runs", "declared_metrics",
           "load_report", "paired_results", "read_metric", "write_run_report"]
