"""Reports: self-contained HTML and Markdown built from the results store (never re-runs models)."""

from surefast.bench.report.build import build_report, default_report_dir

__all__ = ["build_report", "default_report_dir"]
