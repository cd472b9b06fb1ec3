"""Reports: one run's report.json / report.md / report.html, and comparisons across runs."""

from debias.report import assemble
from debias.report.compare import compare_runs, load_report
from debias.report.metrics import Metric, metrics_of
from debias.report.run_report import write_run_report

__all__ = ["Metric", "assemble", "compare_runs", "load_report", "metrics_of", "write_run_report"]
