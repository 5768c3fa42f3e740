"""The report writer on hand-made results (exact values to look for) and ``trilemma bench``."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import pytest
from PIL import Image

from trilemma.cli import main
from trilemma.report import (
    _fmt,
    markdown_table,
    markdown_to_html,
    metric_keys,
    quality_metric,
    write_report,
)
from trilemma.report.plots import _yerr

SHA = "ab" * 32


def _row(run: str, method: str, sampler: str, nfe: int | None, spp: float, m: dict) -> dict:
    return {"run": run, "method": method, "sampler": sampler, "label": sampler, "options": {},
            "nfe_budget": nfe, "nfe": nfe if nfe is not None else 123, "nfe_min": nfe,
            "nfe_max": nfe, "steps": nfe, "n": 500, "seed": 7, "batch_size": 100,
            "seconds_per_sample": spp, "samples_per_second": 1 / spp, "timed_samples": 400,
            "timed_seconds": 400 * spp, "warmup_seconds": 0.1, "warmup_batch": 100,
            "peak_memory_mb": 12.5, "memory_method": "test", "n_nonfinite": 0,
            "metrics": m, "warnings": []}


def _results() -> dict:
    img_rows = [
        _row("digits_vp", "VP", "dpm2m", 10, 2.5e-3, {"FD-digits": 3.21, "precision": 0.61,
                                                      "recall": 0.52, "density": 0.9,
                                                      "coverage": 0.7, "IS-digits": 8.1}),
        _row("digits_vp", "VP", "dpm2m", 20, 5.0e-3, {"FD-digits": 1.75, "precision": 0.71,
                                                      "recall": 0.62, "density": 0.95,
                                                      "coverage": 0.8, "IS-digits": 8.7}),
        _row("digits_vp", "VP", "ode", None, 3.1e-2, {"FD-digits": 1.5, "precision": 0.72,
                                                     "recall": 0.66, "density": 0.97,
                                                     "coverage": 0.82, "IS-digits": 8.8}),
    ]
    cld_rows = [
        _row("digits_cld", "CLD", "sscs", 20, 4.0e-3, {"FD-digits": 2.5, "precision": 0.65,
                                                       "recall": 0.58, "density": 0.91,
                                                       "coverage": 0.75, "IS-digits": 8.4}),
        {**_row("digits_cld", "CLD", "gddim", 5, 1e-3, {}), "error": "FloatingPointError: x",
         "metrics": {}},
    ]
    ext = {"name": "classifier-digits-8px", "metric_name": "FD-digits", "sha256": SHA,
           "path": "/c/clf.safetensors", "source": "cache", "test_accuracy": 0.9861,
           "test_n": 359, "dataset": "digits", "image_size": 8, "feature_dim": 128}
    ref = {"dataset": "digits", "split": "test", "n": 359, "data_sha256": "cd" * 32,
           "extractor_sha256": SHA, "cache": "hit"}

    def run(label: str, method: str, rows: list[dict]) -> dict:
        return {"run": f"runs/{label}", "label": label, "method": method,
                "weights": f"runs/{label}/model.safetensors", "weights_kind": "weights",
                "step": 4000, "process": method.lower(), "config": {}, "config_summary": "cfg",
                "data": {"kind": "image", "name": "digits", "oracle_mixture": False},
                "extractor": ext, "reference": ref,
                "baseline": {"label": "real data (digits train split)", "n": 500,
                             "metrics": {"FD-digits": 0.3125, "precision": 0.8, "recall": 0.81,
                                         "density": 1.01, "coverage": 0.9,
                                         "IS-digits": 9.1}},
                "nll": None, "rows": rows, "skipped": [],
                "warnings": [f"FD-digits computed on n = 500 samples ({label})"], "notes": []}

    return {"format": "trilemma.evaluation/1", "created": "now", "command": "trilemma evaluate",
            "settings": {"n": 500, "seed": 7, "batch_size": 100, "device": "cpu",
                         "reference_split": "test"},
            "environment": {"torch": "x"},
            "runs": [run("digits_vp", "VP", img_rows), run("digits_cld", "CLD", cld_rows)]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = _results()
    paths = write_report(res, out)
    return res, out, paths


def test_csv_has_one_row_per_sampler_budget_plus_baselines(report):
    res, out, _ = report
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["kind"], r["run"], r["sampler"], r["nfe_budget"]) for r in rows] == [
        ("baseline", "digits_vp", "(baseline)", ""),
        ("sample", "digits_vp", "dpm2m", "10"), ("sample", "digits_vp", "dpm2m", "20"),
        ("sample", "digits_vp", "ode", ""),
        ("baseline", "digits_cld", "(baseline)", ""),
        ("sample", "digits_cld", "sscs", "20"), ("sample", "digits_cld", "gddim", "5")]
    assert float(rows[2]["FD-digits"]) == 1.75 and float(rows[5]["recall"]) == 0.58
    assert rows[3]["nfe"] == "123" and rows[6]["error"].startswith("FloatingPointError")
    assert all(r["extractor_sha256"] == SHA for r in rows)
    assert json.loads((out / "results.json").read_text()) == res


def test_html_is_self_contained_and_shows_the_numbers(report):
    res, out, paths = report
    html = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:  # each embedded image decodes to the PNG written next to it
        with Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) as img:
            assert img.format == "PNG"
    for run in res["runs"]:
        for row in run["rows"]:
            for key, val in row["metrics"].items():
                assert f">{_fmt(val)}<" in html, (key, val)
        for val in run["baseline"]["metrics"].values():
            assert f">{_fmt(val)}<" in html
    assert ">2.5<" in html and ">5<" in html  # ms per sample of dpm2m at NFE 10 and 20
    assert SHA in html and "0.9861" in html and "cd" * 32 in html
    assert "FD-digits computed on n = 500 samples (digits_cld)" in html
    assert "<b>not</b> FID" in html and "<th class=''>FID</th>" not in html  # no FID column
    assert "FloatingPointError: x" in html
    # best per column in bold among the samplers (lowest FD, highest recall)
    assert "<td class='best'>1.5</td>" in html and "<td class='best'>0.66</td>" in html


def test_plots_and_naming(report):
    res, out, paths = report
    for key in ("quality_vs_nfe", "quality_vs_time", "diversity_vs_nfe"):
        with Image.open(paths[key]) as img:
            assert img.format == "PNG" and img.size[0] > 500
    key, label = quality_metric(res["runs"][0])
    assert key == "FD-digits" and "not FID" in label
    assert metric_keys(res)[:6] == ["FD-digits", "precision", "recall", "density", "coverage",
                                    "IS-digits"]
    md = markdown_table(res)
    assert md.count("\n") == 2 + 6 and "| digits_cld | gddim (failed) |" in md


def test_markdown_to_html_escapes_and_builds_tables():
    html = markdown_to_html("## A <b>\n| x | y |\n| --- | --- |\n| **1** | 2 |\n- item\n  more")
    assert "<h2>A &lt;b&gt;</h2>" in html
    assert "<thead><tr><th>x</th><th>y</th></tr></thead>" in html
    assert "<tr><td><b>1</b></td><td>2</td></tr>" in html and "---" not in html
    assert "<li>item<br>more</li>" in html


def test_bench_command_writes_the_html_report(tmp_path, capsys):
    code = main(["bench", "--quick", "--mixtures", "imbalanced2d", "--processes", "vp",
                 "--samplers", "em", "dpm2m", "--nfes", "5", "10", "--no-diffusers",
                 "--no-overhead", "--quiet", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads((tmp_path / "oracle_samplers.json").read_text())
    assert [(r["sampler"], r["nfe"]) for r in res["runs"]] == [("em", 5), ("em", 10),
                                                                ("dpm2m", 5), ("dpm2m", 10)]
    html = (tmp_path / "bench.html").read_text()
    assert html.count("src='data:image/png;base64,") == 3
    sw2 = res["runs"][0]["sw2"]
    assert f"{sw2:.4g}" in html and "imbalanced2d / vp" in html and "noise floor" in html
    assert "SW2 vs NFE" in out
    code = main(["bench", "--processes", "nosuch", "--out", str(tmp_path)])
    assert code == 2 and "unknown ['nosuch']" in capsys.readouterr().err


def test_one_formatter_and_metric_direction_for_report_and_bench():
    from trilemma import bench
    from trilemma.report import format as rf

    assert [rf.fmt(v) for v in (None, float("nan"), 3, 0.0, 1.5, 12345.678, 4.2e-4)] == [
        "–", "–", "3", "0", "1.5", "1.235e+04", "4.200e-04"]
    assert _fmt is rf.fmt  # the old private name tests use
    assert not hasattr(bench, "_fmt") and not hasattr(bench, "HIGHER_IS_BETTER")  # one copy
    assert rf.higher_is_better("recall") and rf.higher_is_better("IS-digits")
    assert not rf.higher_is_better("sw2") and not rf.higher_is_better("within_mode_sw2")
    assert rf.best_value([0.2, 0.1], "sw2") == 0.1 and rf.best_value([0.2, 0.1], "quality") == 0.2
    assert rf.best_value([], "sw2") is None
    assert rf.md_table(["a", "b"], [[1, ""]]) == "| a | b |\n| --- | --- |\n| 1 |  |"
    table = rf.html_table([rf.html_cell("x", "th", "")], [[rf.html_cell("1", colspan=2)]],
                          ["error"])
    assert table == ("<table><thead><tr><th class=''>x</th></tr></thead><tbody>\n"
                     "<tr class='error'><td colspan='2'>1</td></tr>\n</tbody></table>")


def test_intervals_and_significant_differences_in_every_output(tmp_path):
    """Rows with ``<metric>_ci`` and a run with paired comparisons: markdown cells read
    ``value [lo, hi]``, the CSV splits each interval into two columns, the HTML shows the
    intervals and the significant-differences table, the plots draw error bars."""
    res = _results()
    run = res["runs"][0]
    for r, ci in zip(run["rows"], ([3.0, 3.5], [1.5, 2.0], [1.2, 1.9]), strict=True):
        r["metrics"]["FD-digits_ci"] = ci
        r["metrics"]["recall_ci"] = [r["metrics"]["recall"] - 0.05, r["metrics"]["recall"]]
    run["comparisons"] = {"pairs": [
        {"a": 0, "b": 1, "a_label": "dpm2m NFE 10", "b_label": "dpm2m NFE 20", "metrics": {
            "FD-digits": {"diff": 1.46, "ci": [1.1, 1.8], "significant": True},
            "recall": {"diff": -0.1, "ci": [-0.2, 0.05], "significant": False}}}],
        "excluded": ["ode NFE 123"]}
    res["settings"]["bootstrap"] = {"repeats": 200, "seed": 1, "fid_repeats": 50,
                                    "reference": "fixed (not resampled)", "method": "m"}
    paths = write_report(res, tmp_path)
    md = markdown_table(res)
    assert "| 3.21 [3, 3.5] |" in md and "FD-digits_ci" not in md
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    cols = list(rows[0])
    assert cols.index("FD-digits_ci_lo") == cols.index("FD-digits") + 1
    assert (rows[1]["FD-digits_ci_lo"], rows[1]["FD-digits_ci_hi"]) == ("3.0", "3.5")
    assert rows[0]["FD-digits_ci_lo"] == ""  # the baseline row has no interval here
    html = paths["html"].read_text()
    assert "<small class='ci'>[1.5, 2]</small>" in html
    assert "<td class='sig'>1.46<br><small>[1.1, 1.8]</small></td>" in html
    assert "<td class='ns'>-0.1<br><small>[-0.2, 0.05]</small></td>" in html
    assert "1 pairs, 1 significant differences" in html and "ode NFE 123" in html
    assert "B = 200 resamples" in html
    for key in ("quality_vs_nfe", "quality_vs_time", "diversity_vs_nfe"):
        with Image.open(paths[key]) as img:
            assert img.format == "PNG"
    lo, hi = _yerr(run["rows"], "FD-digits")  # the error bars the plots draw
    assert lo == pytest.approx([0.21, 0.25, 0.3]) and hi == pytest.approx([0.29, 0.25, 0.4])
    assert _yerr(run["rows"], "precision") is None
