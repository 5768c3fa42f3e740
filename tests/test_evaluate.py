"""``trilemma evaluate`` end to end on tiny runs: files, NFE, oracle metrics, image metrics,
provenance and user errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from trilemma.build import load_run, make_generator
from trilemma.cli import main
from trilemma.evaluate import (
    DataSpec,
    EvaluationError,
    SamplerRequest,
    check_request,
    fd_bootstrap_sd,
    make_scorer,
    parse_options,
    parse_samplers,
    timed_sample,
)
from trilemma.metrics.features import load_classifier
from trilemma.metrics.mixture import SlicedReference, oracle_report, random_directions
from trilemma.metrics.prdc import prdc
from trilemma.oracle import get_mixture
from trilemma.report import _fmt
from trilemma.samplers import GaussianMoments
from trilemma.setup import build_dataset

TOY = {
    "seed": 1,
    "device": "cpu",
    "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 512},
    "train": {"steps": 30, "batch_size": 64, "lr": 3e-3, "log_every": 10},
    "sample": {"sampler": "em", "nfe": 6, "n": 20},
}
DIGITS = {
    "device": "cpu",
    "process": {"name": "vp"},
    "model": {"net": {"name": "unet", "base_channels": 8, "channel_mults": [1],
                      "num_res_blocks": 1, "dropout": 0.0}},
    "data": {"name": "digits"},
    "train": {"steps": 2, "batch_size": 16, "log_every": 1},
    "sample": {"sampler": "ddim", "nfe": 3, "n": 6},
}
N_TOY, BATCH_TOY = 60, 30


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _train(root: Path, name: str, cfg: dict) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(root / name), "--quiet"]) == 0
    return root / name


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 30-step toy VP run evaluated with two samplers (plus a small likelihood)."""
    root = tmp_path_factory.mktemp("evaluate_toy")
    run = _train(root, "toyvp", TOY)
    rep = root / "report"
    code = main(["evaluate", str(run), "--samplers", "em:6,dpm2m:5", "--n", str(N_TOY),
                 "--batch", str(BATCH_TOY), "--seed", "4", "--out", str(rep), "--nll", "6",
                 "--quiet"])
    assert code == 0
    return root, run, rep, json.loads((rep / "results.json").read_text())


def test_toy_report_files_and_values(toy):
    _, _, rep, res = toy
    for name in ("results.json", "results.csv", "quality_vs_nfe.png", "quality_vs_time.png",
                 "diversity_vs_nfe.png", "report.html"):
        assert (rep / name).is_file(), name
    for name in ("quality_vs_nfe.png", "quality_vs_time.png", "diversity_vs_nfe.png"):
        with Image.open(rep / name) as img:
            assert img.format == "PNG" and img.size[0] > 300
    rows = res["runs"][0]["rows"]
    assert [r["label"] for r in rows] == ["em", "dpm2m"]
    for r in rows:
        assert (rep / r["grid"]).is_file() and (rep / r["samples_file"]).is_file()
    html = (rep / "report.html").read_text()
    # every plot and both grids embedded, nothing linked
    assert html.count("src='data:image/png;base64,") == 3 + len(rows)
    assert "src='grids/" not in html
    for r in rows:  # the table shows the numbers of results.json
        for key in ("sw2", "quality", "kl_weights", "precision", "recall"):
            assert f">{_fmt(r['metrics'][key])}<" in html, key
        assert f">{_fmt(1e3 * r['seconds_per_sample'])}<" in html
    assert f"n = {N_TOY}" in html and "seed" in html
    with open(rep / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [t["kind"] for t in table] == ["baseline", "sample", "sample"]
    assert [t["sampler"] for t in table[1:]] == ["em", "dpm2m"]
    assert float(table[1]["sw2"]) == pytest.approx(rows[0]["metrics"]["sw2"], rel=1e-12)
    assert int(table[2]["n"]) == N_TOY and int(table[2]["seed"]) == 4


def test_intervals_and_paired_comparisons_in_every_output(toy):
    """results.json: ``<metric>_ci`` next to every value (the value inside), the settings of
    the bootstrap, the paired difference of the two rows; results.csv: the bounds as columns;
    report.html: the intervals and the table of significant differences."""
    _, _, rep, res = toy
    run = res["runs"][0]
    boot = res["settings"]["bootstrap"]
    assert boot["repeats"] == 200 and boot["level"] == 0.95 and "fixed" in boot["reference"]
    rows = run["rows"]
    for m in [r["metrics"] for r in rows] + [run["baseline"]["metrics"]]:
        for key in ("sw2", "precision", "recall", "density", "coverage"):
            lo, hi = m[f"{key}_ci"]
            assert lo <= m[key] <= hi, key
        assert "quality_ci" not in m  # the oracle mode metrics get no interval
    (pair,) = run["comparisons"]["pairs"]
    assert (pair["a"], pair["b"], pair["a_label"], pair["b_label"]) == (0, 1, "em NFE 6",
                                                                      "dpm2m NFE 5")
    d = pair["metrics"]["sw2"]
    assert d["diff"] == pytest.approx(rows[0]["metrics"]["sw2"] - rows[1]["metrics"]["sw2"])
    assert d["significant"] == (d["ci"][0] > 0 or d["ci"][1] < 0)
    with open(rep / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[1]["sw2_ci_lo"]) == pytest.approx(rows[0]["metrics"]["sw2_ci"][0])
    assert float(table[0]["sw2_ci_hi"]) == pytest.approx(run["baseline"]["metrics"]["sw2_ci"][1])
    html = (rep / "report.html").read_text()
    assert "Significant differences" in html and "SW2: a − b" in html
    lo, hi = rows[0]["metrics"]["sw2_ci"]
    assert f"[{_fmt(lo, 3)}, {_fmt(hi, 3)}]" in html


def test_no_intervals_with_bootstrap_0(toy, capsys):
    root, run, _, _ = toy
    rep = root / "report_noboot"
    code, _, err = _run(capsys, "evaluate", run, "--samplers", "em:6", "--n", "20", "--out",
                        rep, "--bootstrap", "0", "--quiet")
    assert code == 0, err
    res = json.loads((rep / "results.json").read_text())
    assert not any(k.endswith("_ci") for k in res["runs"][0]["rows"][0]["metrics"])
    assert "comparisons" not in res["runs"][0] and res["settings"]["bootstrap"]["repeats"] == 0
    code, _, err = _run(capsys, "evaluate", run, "--samplers", "em:6", "--n", "20", "--out",
                        root / "report_b1", "--bootstrap", "1", "--quiet")
    assert code != 0 and "bootstrap" in err


def test_nfe_and_timing_recorded(toy):
    _, _, _, res = toy
    rows = res["runs"][0]["rows"]
    assert [(r["nfe_budget"], r["nfe"], r["nfe_min"], r["nfe_max"]) for r in rows] == \
        [(6, 6, 6, 6), (5, 5, 5, 5)]
    for r in rows:
        assert r["n"] == N_TOY and r["batch_size"] == BATCH_TOY
        assert r["timed_samples"] == N_TOY - BATCH_TOY  # the first batch is the warm-up
        assert r["seconds_per_sample"] == pytest.approx(r["timed_seconds"] / r["timed_samples"])
        assert 0 < r["seconds_per_sample"] < 1
        assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] >= 0
        assert r["memory_method"]
    assert res["settings"]["n"] == N_TOY and res["settings"]["seed"] == 4
    assert res["environment"]["torch"] == torch.__version__


def test_samples_are_the_seeded_model_samples(toy):
    """Batch 1 of the saved samples is exactly model.sample from the seed (no hidden RNG)."""
    _, run, rep, res = toy
    model, _, _ = load_run(run, "cpu")
    for r in res["runs"][0]["rows"]:
        saved = np.load(rep / r["samples_file"])["samples"]
        assert saved.shape == (N_TOY, 2)
        again = model.sample(BATCH_TOY, r["sampler"], r["nfe_budget"],
                             generator=make_generator(4, "cpu")).samples
        np.testing.assert_array_equal(saved[:BATCH_TOY], again.numpy())


def test_timed_sample_is_the_seeded_batched_stream(toy):
    """The shared timed sampler: every batch from one seeded stream, all timed without warm-up
    (trilemma sample), the first untimed with it, and one extra timed batch when n fits in one."""
    _, run, _, _ = toy
    model, _, _ = load_run(run, "cpu")
    gen = make_generator(7, "cpu")
    want = torch.cat([model.sample(b, "em", 6, generator=gen).samples for b in (20, 20, 10)])
    got = timed_sample(model, 50, "em", 6, batch=20, generator=make_generator(7, "cpu"),
                       device="cpu", warmup=False, memory=False)
    torch.testing.assert_close(got.samples, want, rtol=0, atol=0)
    assert got.samples.dtype == torch.float32 and got.samples.device.type == "cpu"
    assert (got.nfes, got.nfe, got.nfe_max, got.timed_samples) == ([6, 6, 6], 6, 6, 50)
    assert got.seconds > 0 and got.warmup_seconds is None and got.peak_memory_bytes is None
    one = timed_sample(model, 8, "em", 6, batch=20, generator=make_generator(7, "cpu"))
    alone = model.sample(8, "em", 6, generator=make_generator(7, "cpu")).samples
    torch.testing.assert_close(one.samples, alone, rtol=0, atol=0)
    rec = one.record()
    assert len(one.nfes) == 2 and rec["timed_samples"] == 8 and rec["warmup_batch"] == 8
    assert rec["warmup_seconds"] > 0 and rec["peak_memory_mb"] is not None
    assert rec["memory_method"] and rec["nfe"] == 6


def test_check_request_asks_the_method(toy):
    _, run, _, _ = toy
    model, config, _ = load_run(run, "cpu")
    check_request(model, SamplerRequest("em", 5))
    check_request(model, SamplerRequest("ode", None))  # adaptive: no budget needed
    for req, msg in ((SamplerRequest("em", None), "--samplers: sampler 'em' needs an NFE"),
                     (SamplerRequest("sscs", 5), "--samplers: 'sscs' does not fit"),
                     (SamplerRequest("em", 1), "--samplers em: sampler 'em' needs at least"),
                     (SamplerRequest("ddim", 5, {"foo": 1}), "--opt ddim: unknown option")):
        with pytest.raises(EvaluationError, match=msg):
            check_request(model, req)


def test_scorers_share_one_interface():
    """Toy scoring and metrics-off go through one interface: non-finite samples are counted
    and left out, too few finite samples give no metrics, and a baseline row or none."""
    spec = DataSpec("toy", "grid25", mixture=get_mixture("grid25"))
    x = spec.toy_points(30, torch.Generator().manual_seed(1))
    x[:3] = float("nan")
    toy_scorer = make_scorer(spec, n=30)
    m, _, bad = toy_scorer.score(x)
    assert bad == 3 and m["sw2"] is not None and 0 <= m["precision"] <= 1
    assert toy_scorer.reference["kind"] == "oracle" and toy_scorer.extractor is None
    assert toy_scorer.baseline(30, 0)["label"] == "exact samples of grid25"
    assert toy_scorer.score(x[:5]) == ({}, ["only 2 finite samples: no metrics"], 3)
    off = make_scorer(spec, metrics=False)
    assert off.score(x) == ({}, [], 3) and off.baseline(30, 0) is None
    assert off.picture_reference(30) is None
    with pytest.raises(EvaluationError, match="--features: the classifier features are for"):
        make_scorer(spec, features_path="clf.safetensors")


def test_timed_sample_under_bf16_autocasts_the_network(toy):
    """precision='bf16': the network runs under CPU bf16 autocast, samples come back float32
    and close to the fp32 ones (same noise); an unknown precision is refused."""
    _, run, _, _ = toy
    model, _, _ = load_run(run, "cpu")
    seen = []
    lin = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = lin.register_forward_hook(
        lambda mod, args, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype)))
    try:
        half = timed_sample(model, 40, "em", 6, batch=20, generator=make_generator(3, "cpu"),
                            precision="bf16", warmup=False, memory=False)
    finally:
        hook.remove()
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    full = timed_sample(model, 40, "em", 6, batch=20, generator=make_generator(3, "cpu"),
                        warmup=False, memory=False)
    assert half.samples.dtype == torch.float32 and bool(torch.isfinite(half.samples).all())
    assert half.record()["sampling_precision"] == "bf16"
    assert full.record()["sampling_precision"] == "fp32"
    assert not torch.equal(half.samples, full.samples)
    assert float((half.samples - full.samples).abs().max()) < 0.5
    with pytest.raises(ValueError, match="precision"):
        timed_sample(model, 4, "em", 6, precision="fp16")


def test_oracle_metrics_equal_the_library_on_the_same_samples(toy):
    _, _, rep, res = toy
    run = res["runs"][0]
    prov = run["reference"]
    assert prov["kind"] == "oracle" and prov["toy"] == "grid25"
    mix = get_mixture("grid25")
    ref, _ = mix.sample(prov["n_reference"],
                        torch.Generator().manual_seed(prov["reference_seed"]),
                        dtype=torch.float64)
    dirs = random_directions(2, prov["n_projections"],
                             torch.Generator().manual_seed(prov["directions_seed"]))
    for r in run["rows"]:
        x = torch.from_numpy(np.load(rep / r["samples_file"])["samples"])
        want = oracle_report(mix, x, reference_samples=SlicedReference(ref, directions=dirs))
        got = r["metrics"]
        for key in ("sw2", "quality", "modes_covered", "n_modes", "kl_weights",
                    "spread_ratio", "spread_ratio_median", "mode_offset", "within_mode_sw2"):
            if want[key] != want[key]:  # NaN -> None in JSON
                assert got[key] is None
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
        assert got["mode_coverage"] == pytest.approx(want["coverage"])
        assert got["mode_counts"] == want["counts"]
        want_prdc = prdc(ref[:N_TOY], x)
        for key in ("precision", "recall", "density", "coverage"):
            assert got[key] == pytest.approx(want_prdc[key], abs=1e-12), key
        assert got["sw2_floor"] == pytest.approx(prov["sw2_floor"]["mean"])
    # the baseline (exact samples) behaves like exact samples: all within 3 sigma but ~0.3%
    # (binomial s.d. at n = 60: 0.007), every mode of 25 with ~2.4 expected samples each
    # covered with probability ~0.9 per mode, so >= 17 of 25 is a loose bound
    base = run["baseline"]["metrics"]
    assert base["quality"] >= 0.97 and base["modes_covered"] >= 17
    assert base["sw2"] < 3 * prov["sw2_floor"]["mean"]


def test_toy_likelihood_recorded(toy):
    _, _, _, res = toy
    nll = res["runs"][0]["nll"]
    assert nll["n"] == 6 and nll["divergence"] == "exact" and nll["levels"] is None
    assert np.isfinite(nll["bits_per_dim"]) and nll["nfe_mean"] >= 8
    assert np.isfinite(nll["true_bits_per_dim"])  # the oracle's own NLL of the same points


# ----------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_digits")
    run = _train(root, "digvp", DIGITS)
    clf = root / "clf.safetensors"
    assert main(["features", "train", "digits", "--steps", "3", "--out", str(clf),
                 "--quiet"]) == 0
    return root, run, clf


def test_digits_metrics_with_extractor_hash_and_provenance(digits, capsys):
    root, run, clf = digits
    rep = root / "rep_given"
    code, out, err = _run(capsys, "evaluate", run, "--samplers", "ddim:3,em:4", "--n", "12",
                          "--batch", "6", "--out", rep, "--features", clf, "--nll", "3",
                          "--cache-dir", root / "cache", "--quiet")
    assert code == 0, err
    res = json.loads((rep / "results.json").read_text())
    run_rec = res["runs"][0]
    sha = load_classifier(clf).fingerprint
    ext = run_rec["extractor"]
    assert ext["sha256"] == sha and ext["source"] == "given" and ext["metric_name"] == "FD-digits"
    assert 0 <= ext["test_accuracy"] <= 1
    prov = run_rec["reference"]
    assert (prov["dataset"], prov["split"], prov["n"]) == ("digits", "test", 359)
    assert prov["extractor_sha256"] == sha and len(prov["data_sha256"]) == 64
    for r in run_rec["rows"]:
        m = r["metrics"]
        assert r["nfe"] == r["nfe_budget"]
        for key in ("FD-digits", "precision", "recall", "density", "coverage", "IS-digits"):
            assert m[key] is not None and np.isfinite(m[key]), key
        assert m["FD-digits"] >= 0 and 1 <= m["IS-digits"] <= 10 and m["FD-digits_sd"] > 0
        assert "FID" not in m
        for key in ("FD-digits", "precision", "recall", "density", "coverage", "IS-digits"):
            lo, hi = m[f"{key}_ci"]  # every image metric has its 95% interval
            assert lo <= m[key] <= hi, key
    assert [p["a_label"] for p in run_rec["comparisons"]["pairs"]] == ["ddim NFE 3"]
    assert set(run_rec["comparisons"]["pairs"][0]["metrics"]) == {
        "FD-digits", "precision", "recall", "density", "coverage", "IS-digits", "class_kl",
        "min_class_share"}
    assert "FD-digits_ci" in run_rec["baseline"]["metrics"]  # the real-data row has them too
    assert run_rec["baseline"]["label"] == "real data (digits train split)"
    # n below what the metrics need: warned, in the results and in the report
    assert any("n = 12" in w and "FD-digits" in w for w in run_rec["warnings"])
    assert any("not FID" in w for w in run_rec["warnings"])
    html = (rep / "report.html").read_text()
    assert sha in html and "FD-digits" in html and "<b>not</b> FID" in html
    assert "n = 12" in html
    nll = run_rec["nll"]
    assert nll["levels"] == 17 and nll["divergence"] == "hutchinson" and nll["n"] == 3
    assert np.isfinite(nll["bits_per_dim"])
    assert sha in out and "warning" in err
    with Image.open(rep / run_rec["rows"][0]["grid"]) as img:
        assert img.size == (4 * 33 + 1, 3 * 33 + 1)  # 12 digits, 8 px tiles enlarged to 32


def test_likelihood_of_a_binarised_run_uses_binarised_points(digits, capsys):
    """A score model trained on binarised digits is scored on binarised test images, 2 levels."""
    root, _, clf = digits
    run = _train(root, "digbin", {**DIGITS, "data": {"name": "digits", "binarize": "threshold"}})
    rep = root / "rep_bin"
    code, _, err = _run(capsys, "evaluate", run, "--samplers", "ddim:3", "--n", "6", "--batch",
                        "6", "--out", rep, "--features", clf, "--nll", "2", "--cache-dir",
                        root / "cache", "--quiet")
    assert code == 0, err
    nll = json.loads((rep / "results.json").read_text())["runs"][0]["nll"]
    assert nll["levels"] == 2 and "2 levels" in nll["dequantization"]
    assert np.isfinite(nll["bits_per_dim"])


def test_classifier_is_trained_once_and_cached(digits, capsys):
    root, run, _ = digits
    cache = root / "cache2"
    hashes = []
    for i, want in enumerate(("trained now", "cache")):
        rep = root / f"rep_cache{i}"
        code, _, err = _run(capsys, "evaluate", run, "--samplers", "ddim:3", "--n", "8",
                            "--batch", "8", "--out", rep, "--cache-dir", cache,
                            "--classifier-steps", "2", "--quiet")
        assert code == 0, err
        ext = json.loads((rep / "results.json").read_text())["runs"][0]["extractor"]
        assert ext["source"] == want and Path(ext["path"]).parent == cache
        hashes.append(ext["sha256"])
    assert hashes[0] == hashes[1] == load_classifier(Path(ext["path"])).fingerprint


# ----------------------------------------------------------------------------- errors
def test_user_errors_exit_2_with_messages(toy, digits, capsys, tmp_path):
    _, run, _, _ = toy
    _, drun, clf = digits
    out = tmp_path / "r"
    (tmp_path / "empty").mkdir()
    cases = [
        (["evaluate", tmp_path / "empty", "--samplers", "em:5", "--out", out],
         "holds no checkpoint"),
        (["evaluate", run, "--samplers", "sscs:10", "--out", out],
         "'sscs' does not fit process 'vp'; use one of:"),
        (["evaluate", run, "--samplers", "em:5", "--n", "3", "--out", out],
         "need at least k + 1 = 6 samples"),
        (["evaluate", run, "--samplers", "em:5", "--features", clf, "--out", out],
         "classifier features are for image data"),
        (["evaluate", run, "--samplers", "em:5", "--inception", "--out", out],
         "FID needs image data"),
        (["evaluate", run, "--samplers", "em", "--out", out], "needs an NFE budget"),
        (["evaluate", run, "--samplers", "em:abc", "--out", out], "neither an NFE budget"),
        (["evaluate", run, "--samplers", "em:5", "--opt", "eta=1", "--out", out],
         "SAMPLER.KEY=VALUE"),
        (["evaluate", run, "--samplers", "ddim:5", "--opt", "ddim.foo=1", "--out", out],
         "unknown option(s) ['foo']"),
        (["evaluate", drun, "--samplers", "ddim:3", "--features", tmp_path / "nope.st",
          "--out", out], "no classifier file"),
        (["evaluate", run, "run2", "--samplers", "em:5", "--label", "a", "--out", out],
         "give one per run"),
        (["features", "train", "mnist", "--steps", "1", "--out", tmp_path / "m.st"],
         "pass data_root"),
    ]
    for argv, msg in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        assert msg in err, (msg, err)
        assert "Traceback" not in err
    assert not (out / "results.json").exists()


def test_several_runs_share_one_report(toy, capsys, tmp_path):
    root, run, _, _ = toy
    cld = _train(tmp_path, "toycld", {**TOY, "process": {"name": "cld"},
                                      "train": {**TOY["train"], "steps": 3},
                                      "sample": {"sampler": "sscs", "nfe": 6, "n": 10}})
    rep = tmp_path / "both"
    code, _, err = _run(capsys, "evaluate", run, cld, "--samplers", "em:5,sscs:6", "--n", "20",
                        "--batch", "20", "--out", rep, "--quiet")
    assert code == 0, err
    res = json.loads((rep / "results.json").read_text())
    got = {(r["label"], tuple(row["sampler"] for row in r["rows"])) for r in res["runs"]}
    assert got == {("toyvp", ("em",)), ("toycld", ("em", "sscs"))}
    vp = next(r for r in res["runs"] if r["label"] == "toyvp")
    assert vp["skipped"][0]["sampler"] == "sscs" and "does not fit" in vp["skipped"][0]["reason"]
    assert {r["method"] for r in res["runs"]} == {"VP", "CLD"}
    # a sampler that fits none of the runs is an error
    code, _, err = _run(capsys, "evaluate", run, cld, "--samplers", "nosuch:5", "--out",
                        tmp_path / "x")
    assert code == 2 and "fits none of the runs" in err


def test_fd_bootstrap_sd_matches_the_spread_over_independent_draws():
    """The bootstrap s.d. of FD against exact N(0, I) statistics is the s.d. of FD over fresh
    draws of n samples (40 draws: the s.d. estimate itself is good to ~11%; bootstrap bias at
    n = 400, d = 4 is small), so the two agree within 35%."""
    gen = torch.Generator().manual_seed(0)
    d, n = 4, 400
    ref = {"mu": torch.zeros(d, dtype=torch.float64), "cov": torch.eye(d, dtype=torch.float64)}
    from trilemma.metrics.frechet import frechet_distance, gaussian_stats

    fds = []
    for _ in range(40):
        mu, cov = gaussian_stats(torch.randn(n, d, generator=gen) * 1.2 + 0.1)
        fds.append(frechet_distance(ref["mu"], ref["cov"], mu, cov))
    boot = [fd_bootstrap_sd(ref, torch.randn(n, d, generator=gen) * 1.2 + 0.1, repeats=40,
                            seed=i) for i in range(5)]
    assert np.mean(boot) == pytest.approx(np.std(fds, ddof=1), rel=0.35)


def test_ddgan_and_lsgm_runs_plug_in(toy, capsys, tmp_path):
    """Any model with sample(n, sampler, nfe, generator) works: DDGAN (own sampler, fixed NFE =
    T) and LSGM (registry samplers on its latent SDE, NELBO as likelihood) share one report."""
    tiny = {"hidden": 16, "depth": 1}
    ddgan = _train(tmp_path, "ddg", {
        **TOY, "model": {"method": "ddgan", "num_steps": 3, "net": {"name": "mlp", **tiny,
                                                                    "z_dim": 4},
                         "disc": {"name": "mlp", **tiny}},
        "train": {"steps": 2, "batch_size": 32, "log_every": 1},
        "sample": {"sampler": "ddgan", "nfe": 3, "n": 10}})
    lsgm = _train(tmp_path, "lsgm", {
        **TOY, "model": {"method": "lsgm", "stage": "joint", "kl_anneal_steps": 1,
                         "vae": {"name": "mlp_vae", "latent_dim": 2, **tiny,
                                 "decoder": "gaussian", "decoder_std": 0.05},
                         "net": {"name": "mlp", **tiny}},
        "train": {"steps": 2, "batch_size": 32, "log_every": 1},
        "sample": {"sampler": "em", "nfe": 6, "n": 10}})
    rep = tmp_path / "rep"
    code, _, err = _run(capsys, "evaluate", ddgan, lsgm, "--samplers", "ddgan,em:6", "--n", "20",
                        "--batch", "10", "--out", rep, "--quiet")
    assert code == 0, err
    res = json.loads((rep / "results.json").read_text())
    got = {r["method"]: [(row["sampler"], row["nfe"]) for row in r["rows"]]
           for r in res["runs"]}
    assert got == {"DDGAN T=3": [("ddgan", 3)], "LSGM (VP prior)": [("em", 6)]}
    assert all(r["rows"][0]["metrics"]["sw2"] is not None for r in res["runs"])
    # grids are named by the NFE used (the DDGAN's T, not "adaptive")
    assert [r["rows"][0]["grid"] for r in res["runs"]] == [
        "grids/ddg__ddgan_nfe3.png", "grids/lsgm__em_nfe6.png"]
    code, _, err = _run(capsys, "evaluate", lsgm, "--samplers", "em:6", "--n", "10", "--batch",
                        "10", "--nll", "4", "--out", tmp_path / "l", "--quiet")
    assert code == 0, err
    nll = json.loads((tmp_path / "l" / "results.json").read_text())["runs"][0]["nll"]
    assert nll["bound"] and "LSGM" in nll["meaning"] and np.isfinite(nll["bits_per_dim"])
    # a DDGAN has no likelihood, and its NFE is fixed: errors before any sampling
    for argv, msg in ((["--samplers", "ddgan", "--nll", "4"], "no likelihood for DDGAN T=3"),
                      (["--samplers", "ddgan:5"], "NFE = 3; got 5")):
        code, _, err = _run(capsys, "evaluate", ddgan, *argv, "--out", tmp_path / "d",
                            "--quiet")
        assert code == 2 and msg in err, err
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- parsing
def test_parse_samplers_and_options():
    reqs = parse_samplers("sscs:20, gddim:10/20:order=2,ode,ddim:5:eta=0.5")
    assert [(r.name, r.nfe, r.options) for r in reqs] == [
        ("sscs", 20, {}), ("gddim", 10, {"order": 2}), ("gddim", 20, {"order": 2}),
        ("ode", None, {}), ("ddim", 5, {"eta": 0.5})]
    assert reqs[1].label == "gddim[order=2]"
    assert SamplerRequest("em", 5).label == "em"
    assert parse_options(["gddim.order=2", "ddim.eta=0.3"]) == {"gddim": {"order": 2},
                                                                 "ddim": {"eta": 0.3}}
    for bad, msg in (("", "empty"), ("em:0", "positive"), (":5", "no sampler name"),
                     ("em:5:=3", "no key")):
        with pytest.raises(EvaluationError, match=msg):
            parse_samplers(bad)


def test_report_combines_separate_evaluations(toy, capsys, tmp_path):
    """`trilemma report` puts runs evaluated separately on one page, files copied, and refuses
    reports whose numbers are not comparable."""
    _, run, rep, res = toy
    other = tmp_path / "other"
    code, _, err = _run(capsys, "evaluate", run, "--samplers", "ddim:4", "--n", N_TOY,
                        "--batch", BATCH_TOY, "--seed", "4", "--out", other, "--label", "again",
                        "--quiet")
    assert code == 0, err
    both = tmp_path / "both"
    code, out, err = _run(capsys, "report", rep, other, "--out", both)
    assert code == 0, err
    merged = json.loads((both / "results.json").read_text())
    assert [r["label"] for r in merged["runs"]] == ["toyvp", "again"]
    assert [row["sampler"] for r in merged["runs"] for row in r["rows"]] == ["em", "dpm2m", "ddim"]
    first = merged["runs"][0]["rows"][0]
    assert first["metrics"] == res["runs"][0]["rows"][0]["metrics"]
    for r in merged["runs"]:
        for row in r["rows"]:
            assert (both / row["grid"]).is_file() and (both / row["samples_file"]).is_file()
    html = (both / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 3 + 3
    assert merged["command"].startswith("trilemma report ")
    assert [c["report"] for c in merged["combined_from"]] == [str(rep), str(other)]
    assert "ddim" in out and "toyvp" in out
    # different n: not comparable
    small = tmp_path / "small"
    assert _run(capsys, "evaluate", run, "--samplers", "em:3", "--n", "30", "--batch", "30",
                "--seed", "4", "--out", small, "--quiet")[0] == 0
    code, _, err = _run(capsys, "report", rep, small, "--out", tmp_path / "bad")
    assert code == 2 and "n = 30" in err and "--n" in err
    code, _, err = _run(capsys, "report", rep, tmp_path / "nothing", "--out", tmp_path / "bad")
    assert code == 2 and "no results.json" in err
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.json").write_text("{not json")
    code, _, err = _run(capsys, "report", tmp_path / "corrupt", "--out", tmp_path / "bad")
    assert code == 2 and "not readable JSON" in err


def test_evaluate_with_teleport_from_the_training_data(toy, tmp_path):
    """``--opt dpm2m.teleport=data`` samples from the run's data moments; the row keeps the
    option as the user wrote it (JSON-safe) and matches the library's samples."""
    _, run, _, _ = toy
    rep = tmp_path / "rep"
    assert main(["evaluate", str(run), "--samplers", "dpm2m:5", "--opt", "dpm2m.teleport=data",
                 "--opt", "dpm2m.teleport_sigma=2", "--n", str(N_TOY), "--batch", str(N_TOY),
                 "--seed", "4", "--out", str(rep), "--quiet", "--bootstrap", "0"]) == 0
    row = json.loads((rep / "results.json").read_text())["runs"][0]["rows"][0]
    assert "error" not in row and row["options"]["teleport"] == "data"
    model, config, _ = load_run(run)
    mom = GaussianMoments.from_samples(build_dataset(config).data)
    res = model.sample(N_TOY, "dpm2m", 5, generator=make_generator(4, "cpu"), teleport=mom,
                       teleport_sigma=2.0)
    got = np.load(rep / row["samples_file"])["samples"]
    np.testing.assert_allclose(got, res.samples.numpy(), rtol=1e-5, atol=1e-6)
