"""``trilemma sample/evaluate --classifier`` end to end on tiny toy runs, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import trilemma
from trilemma.cli import main
from trilemma.evaluate.sampling import timed_sample

DATA = {"name": "toy", "toy": "imbalanced2d", "n": 1000}
TRAIN = {"steps": 10, "batch_size": 64, "warmup_steps": 0, "log_every": 5}
NET = {"name": "mlp", "hidden": 16, "depth": 1}


def _config(process: dict, method: str | None = None) -> dict:
    model = {"net": NET} if method is None else {"method": method, "net": NET,
                                                   "num_classes": 4}
    data = DATA if method is None else {**DATA, "labels": True}
    return {"seed": 0, "device": "cpu", "process": process, "model": model, "data": data,
            "train": TRAIN, "sample": {"sampler": "em", "nfe": 8, "n": 16}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cg")
    for name, proc, method in (("score", {"name": "vp"}, None),
                               ("clf", {"name": "vp"}, "noise_classifier"),
                               ("clf_ve", {"name": "ve"}, "noise_classifier")):
        trilemma.train(_config(proc, method), root / name, progress=False)
    return root


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_with_a_classifier(runs, tmp_path, capsys):
    base = ["sample", runs / "score", "--sampler", "em", "--nfe", "8", "--n", "12",
            "--batch", "5"]
    code, out, err = _run(capsys, *base, "--out", tmp_path / "plain.npz")
    assert code == 0, err
    code, out, err = _run(capsys, *base, "--classifier", runs / "clf", "--classifier-scale",
                          "4", "--label", "3", "--out", tmp_path / "guided.npz")
    assert code == 0, err
    assert "NFE 8" in out and "classifier guidance (class 3, scale 4)" in out
    code, _, err = _run(capsys, *base, "--classifier", runs / "clf", "--classifier-scale",
                        "0", "--label", "3", "--out", tmp_path / "zero.npz")
    assert code == 0, err
    plain, guided, zero = (np.load(tmp_path / f"{k}.npz")["samples"]
                           for k in ("plain", "guided", "zero"))
    assert np.array_equal(plain, zero) and not np.allclose(plain, guided)


@pytest.mark.parametrize("extra, message", [
    (["--classifier-scale", "2"], "--classifier-scale: give the classifier too"),
    (["--classifier", "{clf}"], "--label: classifier guidance needs the class"),
    (["--classifier", "{clf}", "--label", "4"], "--label: classes run from 0 to 3"),
    (["--classifier", "{clf}", "--label", "1", "--classifier-scale", "-1"],
     "--classifier-scale: expected a finite number >= 0"),
    (["--classifier", "{score}", "--label", "1"], "is a 'score' run, not a noise classifier"),
    (["--classifier", "{clf_ve}", "--label", "1"], "--classifier: trained on process ve"),
    (["--classifier", "{clf}/missing", "--label", "1"], "--classifier: no such run"),
])
def test_sample_guidance_errors(runs, tmp_path, capsys, extra, message):
    extra = [e.format(clf=runs / "clf", score=runs / "score", clf_ve=runs / "clf_ve")
             for e in extra]
    code, _, err = _run(capsys, "sample", runs / "score", "--nfe", "8", "--n", "4", *extra,
                        "--out", tmp_path / "x.npz")
    assert code == 2 and message in err, err


def test_sampling_the_classifier_run_is_refused(runs, tmp_path, capsys):
    code, _, err = _run(capsys, "sample", runs / "clf", "--out", tmp_path / "x.npz")
    assert code == 2 and "--sampler: a noise classifier" in err


def test_evaluate_with_classifier_scales_as_rows(runs, tmp_path, capsys):
    code, out, err = _run(capsys, "evaluate", runs / "score", "--samplers", "em:8", "--n", "40",
                          "--batch", "20", "--bootstrap", "20", "--classifier", runs / "clf",
                          "--classifier-scale", "0/3", "--out", tmp_path / "rep", "--quiet")
    assert code == 0, err
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    run = res["runs"][0]
    assert [r["label"] for r in run["rows"]] == ["em cg=0", "em cg=3"]
    assert [r["classifier_scale"] for r in run["rows"]] == [0.0, 3.0]
    for r in run["rows"]:
        m = r["metrics"]
        assert 0 <= m["class_share_ci"][0] <= m["class_share"] <= m["class_share_ci"][1] <= 1
    assert run["classifier_guidance"]["scales"] == [0.0, 3.0]
    assert "class_share" in out


def test_evaluate_guidance_errors(runs, tmp_path, capsys):
    base = ["evaluate", runs / "score", "--samplers", "em:8", "--n", "40", "--out",
            tmp_path / "rep", "--quiet"]
    code, _, err = _run(capsys, *base, "--classifier-scale", "1")
    assert code == 2 and "--classifier-scale: give the classifier too" in err
    code, _, err = _run(capsys, *base, "--classifier", runs / "clf", "--classifier-scale",
                        "1/-2")
    assert code == 2 and "--classifier-scale: scales must be finite numbers >= 0" in err
    code, _, err = _run(capsys, *base, "--classifier", runs / "clf_ve")
    assert code == 2 and "--classifier: trained on process ve" in err


def test_balanced_labels_follow_the_batches():
    """timed_sample hands each batch its slice of the labels."""
    seen = []

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def sample(self, n, sampler, nfe, generator=None, labels=None, guidance=0.0):
            seen.append(labels.tolist())
            return type("R", (), {"samples": torch.zeros(n, 2), "nfe": 1, "info": {}})()

    timed_sample(Fake(), 7, "em", 1, batch=3, labels=torch.arange(7) % 4, warmup=False,
                 memory=False)
    assert seen == [[0, 1, 2], [3, 0, 1], [2]]

