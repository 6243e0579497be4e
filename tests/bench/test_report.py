import re

from surefast.bench.report import build_report
from surefast.bench.report.build import sweeps_from_labels
from surefast.bench.store import Store

from .test_analysis import write_synthetic_study


def test_sweeps_are_read_from_labels():
    assert sweeps_from_labels({"wanda-10", "wanda-20", "gptq-w4", "rtn-4"}) == {
        "wanda": [(0.0, ""), (10.0, "wanda-10"), (20.0, "wanda-20")]
    }


def test_report_has_tables_plots_and_findings(tmp_path):
    store = Store(tmp_path / "store")
    params = {"fam-0.5b": 0.5e9, "fam-1.5b": 1.5e9, "other-1b": 1e9}
    run = write_synthetic_study(store, ("mmlu", "cosmosqa"), params)
    html_path = build_report(store, [run.run_id], tmp_path / "report")
    page = html_path.read_text()
    assert page.count("<table>") == 2
    assert (
        len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 1 + 2 + 1
    )  # scatter, 2 sweeps, coverage
    assert "Hidden inflation" in page and "wanda on fam-0.5b: set size jumps" in page
    # Scale compares sizes of one family only (other-1b has no second size and no rows here).
    assert "Scale, gptq-w4, mean set size change: fam-0.5b +0.60, fam-1.5b +0.60" in page
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| fam-0.5b | gptq-w4 |" in md and (tmp_path / "report" / "coverage.png").stat().st_size > 1000
