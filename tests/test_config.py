"""Config loading and validation: every error names the dotted key and what is allowed."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from trilemma.build import (
    build_dataset,
    build_model,
    build_train_config,
    data_shape_of,
    load_run,
    net_kwargs,
    resolve_from_data,
)
from trilemma.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_override,
    read_yaml,
    validate,
)
from trilemma.nets import count_parameters
from trilemma.train import TrainConfig
from trilemma.training import RunError, train_run

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))

BASE = {
    "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 256},
    "train": {"steps": 10, "batch_size": 32, "lr": 1e-3},
}


def _write(tmp_path: Path, cfg: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _problems(raw: dict, overrides: list[str] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides(raw, overrides))
    return info.value.problems


def _one_problem(raw: dict, overrides: list[str] = ()) -> str:
    problems = _problems(raw, overrides)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- shipped configs
def test_configs_folder_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {"toy_vp.yaml", "toy_cld.yaml", "digits_vp.yaml", "digits_cld.yaml"} <= names


#: the real MNIST files for configs that read MNIST (``data.root``); not part of the product
REAL_MNIST = Path(os.environ.get(
    "TRILEMMA_MNIST", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))


def _shipped(path: Path) -> tuple[Config, tuple[int, ...], object]:
    """A shipped config resolved as a run resolves it: ``(config, data shape, dataset)``. A
    config whose MNIST folder (``data.root``, relative to where it is run) is missing reads the
    real MNIST files when present; without them it is validated without its paths and built
    for 28 x 28 images (dataset None)."""
    raw = read_yaml(path)
    if ((raw.get("model") or {}).get("net") or {}).get("name") == "diffusers_unet":
        pytest.importorskip("diffusers", reason="the optional diffusers package is not installed")
    if raw["data"]["name"] == "folder" and not Path(raw["data"]["path"]).exists():
        # a config for the user's own folder: validated without its path, built for its size
        cfg = Config.from_dict(raw, check_paths=False)
        return cfg, (1, cfg.data["size"], cfg.data["size"]), None
    root = (raw.get("data") or {}).get("root")
    if raw["data"]["name"] == "idx" and root and not Path(root).exists():
        if not REAL_MNIST.is_dir():
            cfg = Config.from_dict(raw, check_paths=False)
            if cfg.model.get("sigma_data") == "auto":
                cfg = dataclasses.replace(cfg, model={**cfg.model, "sigma_data": 0.5})
            return cfg, (1, 28, 28), None
        raw = apply_overrides(raw, [f"data.root={REAL_MNIST}"])
    cfg = Config.from_dict(raw)
    ds = build_dataset(cfg)
    return resolve_from_data(cfg, ds), data_shape_of(ds), ds  # sigma_data: auto as a run


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_builds(path: Path):
    cfg, shape, ds = _shipped(path)
    teacher = cfg.model.get("teacher") if cfg.model.get("method") in (
        "consistency", "progressive") else None
    model = build_model(cfg, shape)
    if teacher and not teacher.startswith("oracle:") and not Path(teacher).exists():
        # a distillation config whose teacher run (relative to where it is run) is not trained:
        # the student builds (it samples without its teacher), training would stop at once
        with pytest.raises(ConfigError, match="model.teacher: the teacher run .* was not found"):
            model.teacher.load()
    assert isinstance(build_train_config(cfg), TrainConfig)
    assert count_parameters(model) > 0
    # the net's sizes follow the data and the process (CLD doubles the input)
    k = 2 if cfg.process["name"] == "cld" else 1
    net = net_kwargs(cfg, shape)
    if cfg.model.get("method") == "lsgm":  # the prior's net sees the latent, not the data
        vae = cfg.model["vae"]
        shape = (vae.get("latent_channels") or vae.get("latent_dim"),)
    if cfg.model.get("method") == "noise_classifier":  # logits of the classes, not a score
        size = net["in_dim"] if net["name"] == "mlp" else net["in_channels"]
        assert (size, net["num_classes"]) == (k * shape[0], cfg.model["num_classes"])
    elif net["name"] == "mlp":
        assert (net["in_dim"], net["out_dim"]) == (k * shape[0], shape[0])
    else:
        assert (net["in_channels"], net["out_channels"]) == (k * shape[0], shape[0])
    # the resolved config is JSON-safe and reproduces itself
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())), check_paths=ds is not None)
    assert again.to_dict() == cfg.to_dict()


# --------------------------------------------------------------------------- resolution
def test_defaults_are_filled_and_resolved():
    cfg = Config.from_dict({**BASE, "seed": 7})
    assert cfg.model["prediction"] == "eps"
    assert cfg.model["objective"] == "dsm"
    assert cfg.model["weighting"] == "quality"
    assert cfg.process == {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "eps": 1e-3}
    assert cfg.train["seed"] == 7  # the trainer's seed follows the run seed unless set
    assert cfg.train["betas"] == [0.9, 0.999]
    assert cfg.sample == {"sampler": "em", "nfe": 100, "n": 64, "options": {}}
    assert cfg.device == "auto"
    cld = Config.from_dict({**BASE, "process": {"name": "cld"}})
    assert (cld.model["prediction"], cld.model["objective"], cld.model["weighting"]) == (
        "mixed", "hsm", "reweighted")


def test_yaml11_exponent_strings_become_numbers(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; number fields accept it
    path = tmp_path / "c.yaml"
    path.write_text("process: {name: vp}\nmodel: {net: {name: mlp}}\n"
                    "data: {name: toy, toy: grid25}\ntrain: {lr: 1e-3, steps: 5}\n")
    cfg = load_config(path)
    assert cfg.train["lr"] == pytest.approx(1e-3) and isinstance(cfg.train["lr"], float)


# --------------------------------------------------------------------------- errors
def test_unknown_key_with_suggestion():
    raw = {**BASE, "data": {"name": "digits", "sise": 8}, "model": {"net": {"name": "unet"}}}
    assert _one_problem(raw) == "unknown key 'data.sise' (did you mean 'size'?)"
    msg = _one_problem({**BASE, "trian": {}})
    assert msg == "unknown key 'trian' (did you mean 'train'?)"
    msg = _one_problem(BASE, ["model.net.hiden=8"])
    assert msg == "unknown key 'model.net.hiden' (did you mean 'hidden'?)"


def test_unknown_key_without_close_match_lists_valid_keys():
    msg = _one_problem(BASE, ["train.zzz=1"])
    assert msg.startswith("unknown key 'train.zzz'; valid keys: steps, batch_size, lr")


def test_wrong_type():
    msg = _one_problem(BASE, ["train.steps=abc"])
    assert msg == "train.steps: expected an integer, got a string ('abc')"
    msg = _one_problem(BASE, ["train.steps=1.5"])
    assert msg == "train.steps: expected an integer, got a number (1.5)"
    msg = _one_problem(BASE, ["train.bf16=3"])
    assert msg == "train.bf16: expected a boolean (true/false), got an integer (3)"
    msg = _one_problem(BASE, ["train.betas=[0.9]"])
    assert msg.startswith("train.betas: expected a list of 2 items")
    msg = _one_problem(BASE, ["model.net.hidden=true"])  # a bool is not an integer
    assert msg.startswith("model.net.hidden: expected an integer, got a boolean")
    msg = _one_problem({**BASE, "model": ["mlp"]})
    assert msg.startswith("model: expected a mapping of keys, got a list")


def test_out_of_range():
    assert _one_problem(BASE, ["train.lr=-1"]) == "train.lr: expected a positive number, got -1"
    assert _one_problem(BASE, ["train.batch_size=0"]) == (
        "train.batch_size: expected a positive integer, got 0")
    assert _one_problem(BASE, ["train.ema_decay=1.5"]) == (
        "train.ema_decay: expected a number in [0, 1), got 1.5")
    assert _one_problem(BASE, ["seed=-3"]) == "seed: expected an integer >= 0, got -3"
    assert _one_problem(BASE, ["device=gpu"]).startswith(
        "device: expected one of: cpu, cuda, cuda:N, auto")
    assert _one_problem(BASE, ["model.sigma_data=0"]) == (
        "model.sigma_data: expected a positive number or 'auto', got 0")
    # couplings checked by the consumers are reported with their section
    assert _one_problem(BASE, ["train.warmup_steps=10"]).startswith(
        "train.warmup_steps must be < steps = 10")
    assert _one_problem(BASE, ["process.beta_max=0.01"]).startswith("process: beta_max")


def test_choices_list_allowed_values():
    msg = _one_problem(BASE, ["data.toy=grid26"])
    assert msg.startswith("data.toy: expected one of: 'grid25', ")
    msg = _one_problem(BASE, ["process.name=vpp"])
    assert msg.startswith("process.name: unknown process 'vpp' (did you mean 'vp'?); use one of:")
    assert "cld" in msg
    msg = _one_problem(BASE, ["data.name=mnist"])
    assert msg.startswith("data.name: unknown dataset 'mnist'") and "idx" in msg


def test_objective_prediction_weighting_must_fit_the_process():
    assert _one_problem(BASE, ["model.objective=hsm"]) == (
        "model.objective: 'hsm' does not fit process 'vp'; use one of: dsm")
    cld = ["process.name=cld"]
    assert _one_problem(BASE, cld + ["model.objective=dsm"]) == (
        "model.objective: 'dsm' does not fit process 'cld'; use one of: hsm, cld_dsm")
    assert _one_problem(BASE, cld + ["model.prediction=eps"]) == (
        "model.prediction: 'eps' does not fit process 'cld'; use one of: mixed, score, edm")
    assert _one_problem(BASE, ["model.weighting=reweighted"]) == (
        "model.weighting: 'reweighted' does not fit objective 'dsm'; "
        "use one of: quality, likelihood, likelihood_is, edm")


OLD_MODEL_KEYS = ["net", "prediction", "objective", "weighting", "sigma_data", "label_dropout"]


def test_edm_choices_resolve_and_configs_without_them_do_not_change():
    """The EDM keys (``t_sampling``, ``p_mean``, ``p_std``) appear in a resolved config only
    when given, so configs and saved runs from before resolve exactly as they did."""
    assert list(Config.from_dict(BASE).model) == OLD_MODEL_KEYS
    edm = Config.from_dict(apply_overrides(BASE, ["model.prediction=edm", "model.weighting=edm",
                                                 "model.t_sampling=lognormal"]))
    assert {k: edm.model[k] for k in ("prediction", "weighting", "t_sampling", "p_mean",
                                      "p_std")} == {
        "prediction": "edm", "weighting": "edm", "t_sampling": "lognormal", "p_mean": -1.2,
        "p_std": 1.2}
    uni = Config.from_dict(apply_overrides(BASE, ["model.t_sampling=uniform"]))
    assert list(uni.model) == OLD_MODEL_KEYS + ["t_sampling"]
    cld = Config.from_dict(apply_overrides(BASE, ["process.name=cld", "model.prediction=edm"]))
    assert cld.model["prediction"] == "edm" and cld.model["objective"] == "hsm"


def test_edm_choice_errors():
    assert _one_problem(BASE, ["model.p_mean=0"]) == (
        "model.p_mean: only used with model.t_sampling: lognormal")
    assert _one_problem(BASE, ["model.t_sampling=uniform", "model.p_std=1"]) == (
        "model.p_std: only used with model.t_sampling: lognormal")
    assert _one_problem(BASE, ["model.t_sampling=normal"]) == (
        "model.t_sampling: 'normal' does not fit the DSM time sampling; use one of: uniform, "
        "lognormal")
    assert _one_problem(BASE, ["model.t_sampling=lognormal", "model.weighting=likelihood"]) == (
        "model.t_sampling: 'lognormal' does not fit weighting 'likelihood' (a likelihood bound "
        "needs its own t); use weighting: quality or edm")
    assert _one_problem(BASE, ["process.name=cld", "model.t_sampling=lognormal"]).startswith(
        "model.t_sampling: 'lognormal' needs a scalar process and the dsm objective")
    assert _one_problem(BASE, ["model.t_sampling=lognormal", "model.p_std=0"]) == (
        "model.p_std: expected a positive number, got 0")
    assert _one_problem(BASE, ["model.sigma_data=automatic"]) == (
        "model.sigma_data: expected a positive number or 'auto', got 'automatic'")
    assert _one_problem(BASE, ["process.name=cld", "model.weighting=edm"]) == (
        "model.weighting: 'edm' does not fit objective 'hsm'; use one of: reweighted, "
        "likelihood")


def test_sigma_data_auto_is_estimated_from_the_data_and_stored(tmp_path):
    """``sigma_data: auto``: the RMS of the training data (grid25: sqrt(2 + 0.05^2) = 1.415)
    replaces 'auto' when a run starts; the run's config stores the number, so it reloads
    without the data and resumes from the same 'auto' config; building without the data is a
    clear error."""
    raw = apply_overrides(BASE, ["model.sigma_data=auto", "data.n=20000", "train.steps=2",
                                 "train.ckpt_every=1", "train.sample_every=0", "device=cpu"])
    cfg = Config.from_dict(raw)
    assert cfg.model["sigma_data"] == "auto"
    with pytest.raises(ConfigError, match="estimated from the training data"):
        build_model(cfg, (2,))
    ds = build_dataset(cfg)
    got = resolve_from_data(cfg, ds)
    assert got.model["sigma_data"] == pytest.approx(1.415, abs=0.01)
    assert resolve_from_data(got, ds) is got
    train_run(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["sigma_data"] == got.model["sigma_data"]
    model, _, _ = load_run(tmp_path / "run")
    assert model.model.sigma_data == got.model["sigma_data"]
    more = Config.from_dict(apply_overrides(raw, ["train.steps=3"]))
    train_run(more, tmp_path / "run", resume=True, progress=False)
    other = Config.from_dict(apply_overrides(raw, ["train.steps=4", "model.sigma_data=0.5"]))
    with pytest.raises(RunError, match="model.sigma_data"):
        train_run(other, tmp_path / "run", resume=True, progress=False)
    # a run trained with a given number does not resume as 'auto' when the estimate differs
    train_run(Config.from_dict(apply_overrides(raw, ["model.sigma_data=0.5"])),
              tmp_path / "given", progress=False)
    with pytest.raises(RunError, match=r"model.sigma_data: 0.5 -> 1.41"):
        train_run(more, tmp_path / "given", resume=True, progress=False)


def test_sampler_must_fit_the_process():
    msg = _one_problem(BASE, ["sample.sampler=sscs"])
    assert msg.startswith("sample.sampler: 'sscs' does not fit process 'vp'; use one of: em,")
    assert "dpm2m" in msg and "gddim" not in msg
    msg = _one_problem(BASE, ["process.name=cld", "sample.sampler=ddim"])
    assert msg.startswith("sample.sampler: 'ddim' does not fit process 'cld'; use one of:")
    assert "sscs" in msg and "dpm2m" not in msg
    assert _one_problem(BASE, ["sample.sampler=heun", "sample.nfe=2"]) == (
        "sample.nfe: sampler 'heun' needs at least 3 NFE, got 2")
    assert _one_problem(BASE, ["sample.options={bogus: 1}"]).startswith(
        "sample.options: unknown option(s) ['bogus'] for sampler 'em'")


def test_net_sizes_are_derived_and_must_fit_the_data():
    assert _one_problem(BASE, ["model.net.in_dim=2"]).startswith(
        "model.net.in_dim: is derived from the data")
    assert _one_problem(BASE, ["model.net={name: unet}"]) == (
        "model.net.name: 'unet' does not fit data 'toy' (points (n, d)); use: mlp")


def test_all_problems_reported_at_once():
    problems = _problems(BASE, ["train.lr=-1", "train.steps=x", "model.net.hiden=3"])
    assert len(problems) == 3
    assert ConfigError(problems).args[0].count("\n") == 2


def test_missing_sections_and_required_keys():
    raw = {k: v for k, v in BASE.items() if k != "process"}
    assert "process: required section is missing" in _problems(raw)
    msg = _one_problem({**BASE, "data": {"name": "folder", "size": 8},
                        "model": {"net": {"name": "unet"}}})
    assert msg.startswith("data.path: required key is missing")


def test_data_paths_must_exist_unless_rebuilding(tmp_path):
    raw = {**BASE, "model": {"net": {"name": "unet"}},
           "data": {"name": "folder", "path": str(tmp_path / "nope"), "size": 8}}
    assert _one_problem(raw) == f"data.path: no such file or directory: {tmp_path / 'nope'}"
    Config.from_dict(raw, check_paths=False)  # a saved run may be re-opened without its data


def test_folder_data_builds_a_unet_sized_for_it(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (12, 10), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = Config.from_dict({**BASE, "process": {"name": "cld"},
                            "model": {"net": {"name": "unet", "base_channels": 8,
                                              "channel_mults": [1], "num_res_blocks": 1}},
                            "data": {"name": "folder", "path": str(tmp_path), "size": 6}})
    shape = data_shape_of(build_dataset(cfg))
    assert shape == (3, 6, 6)
    net = net_kwargs(cfg, shape)
    assert (net["in_channels"], net["out_channels"], net["image_size"]) == (6, 3, 6)
    build_model(cfg, shape)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("process: {name: vp\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top level"):
        load_config(lst)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- overrides
def test_parse_override_values_are_yaml():
    assert parse_override("train.lr=0.5") == (["train", "lr"], 0.5)
    assert parse_override("model.net.channel_mults=[1, 2]") == (
        ["model", "net", "channel_mults"], [1, 2])
    assert parse_override("sample.options={eta: 0.5}") == (["sample", "options"], {"eta": 0.5})
    assert parse_override("model.weighting=") == (["model", "weighting"], None)
    assert parse_override("data.toy=rings") == (["data", "toy"], "rings")
    assert parse_override("train.bf16=true") == (["train", "bf16"], True)
    assert parse_override("a=b=c") == (["a"], "b=c")
    for bad in ("train.lr", "=3", "train..lr=1", ".lr=1"):
        with pytest.raises(ConfigError, match="override"):
            parse_override(bad)
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("train.lr=[1, 2")


def test_overrides_apply_and_validate(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["train.lr=0.01", "process.name=cld", "sample.sampler=sscs",
                             "model.net.hidden=24"])
    assert cfg.train["lr"] == 0.01 and cfg.process["name"] == "cld"
    assert cfg.model["net"]["hidden"] == 24 and cfg.model["objective"] == "hsm"
    assert BASE["train"]["lr"] == 1e-3  # the raw dict is not modified
    with pytest.raises(ConfigError, match=r"^train.lr: expected a positive number, got -1$"):
        load_config(path, ["train.lr=-1"])
    with pytest.raises(ConfigError, match="'train.lr' is a value"):
        load_config(path, ["train.lr.x=1"])


def test_garbage_sections_give_messages_not_crashes():
    problems = _problems({"process": 3, "model": None, "data": "x", "train": [], "sample": 5})
    assert problems == [
        "process: expected a mapping of keys, got an integer (3)",
        "data: expected a mapping of keys, got a string ('x')",
        "train: expected a mapping of keys, got a list ([])",
        "sample: expected a mapping of keys, got an integer (5)",
    ]
    problems = _problems({"process": {"name": [1]}, "model": {"net": {"name": {}}},
                          "data": {"name": [2]}})
    assert [p.split(":")[0] for p in problems] == ["process.name", "data.name", "model.net.name"]
