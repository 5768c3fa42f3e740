"""Hostile use of run folders (issue 12): two writers, corrupted checkpoint fields, non-finite
weights, unwritable folders, half-deleted checkpoints. See also ``test_hostile.py``."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hostile_helpers import (
    TOY,
    copy_run,
    log_rows,
    one_line_error,
    run_cli,
    train_toy,
    write_config,
)
from trilemma.cli import main
from trilemma.runs import LOCK_FILE, lock_run
from trilemma.train import Trainer, TrainingDivergedError, list_checkpoints


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return train_toy(tmp_path_factory.mktemp("hostile_runs"))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


def resume(capsys, cfg: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "train", cfg, "--out", run, "--resume", "--quiet",
                   "--set", "train.steps=6", *extra)


# --------------------------------------------------------------------------- 3. one writer
def test_second_writer_is_refused_while_the_first_holds_the_lock(toy_run, tmp_path, capsys):
    cfg, _ = toy_run
    run = copy_run(toy_run[1], tmp_path)
    before = snapshot(run)
    with lock_run(run):
        for extra in ((), ("--resume",)):
            code, _, err = run_cli(capsys, "train", cfg, "--out", run, *extra)
            one_line_error(code, err, f"pid {os.getpid()}", socket.gethostname(), LOCK_FILE)
        # reading a run while it trains stays allowed
        code, out, err = run_cli(capsys, "info", run)
        assert code == 0 and "step       4" in out, err
        code, _, err = run_cli(capsys, "sample", run, "--n", "5", "--out", tmp_path / "s.npz")
        assert code == 0, err
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != LOCK_FILE} == before
    assert not (run / LOCK_FILE).exists()


def test_two_trains_started_together_one_is_refused(tmp_path, capsys):
    cfg = write_config(tmp_path / "a.yaml", {**TOY, "train": {**TOY["train"], "ckpt_every": 1}})
    run = tmp_path / "run"
    start = threading.Barrier(2)
    codes: list[int] = []

    def train() -> None:
        start.wait()
        codes.append(main(["train", str(cfg), "--out", str(run), "--quiet"]))

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    _, err = capsys.readouterr()
    assert sorted(codes) == [0, 2], err
    assert "is being trained by" in err or "already holds checkpoints" in err
    assert [p.name for p in list_checkpoints(run)][-1] == "step_000004"


def test_a_stale_lock_is_taken_over(toy_run, tmp_path, capsys):
    cfg, _ = toy_run
    run = copy_run(toy_run[1], tmp_path)
    (run / LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 7, "host": socket.gethostname(),
                                             "started": "yesterday"}))
    code, _, err = resume(capsys, cfg, run)
    assert code == 0, err
    assert "stale" in err and str(2 ** 22 + 7) in err
    assert not (run / LOCK_FILE).exists()


# --------------------------------------------------------------------------- 5. checkpoint fields
def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


STATE_EDITS = {
    "step -50": ("step", lambda s: s.update(step=-50)),
    "step 1e9": ("step", lambda s: s.update(step=1_000_000_000)),
    "step abc": ("step", lambda s: s.update(step="abc")),
    "micro_batches -7": ("micro_batches", lambda s: s.update(micro_batches=-7)),
    "micro_batches 1e30": ("micro_batches", lambda s: s.update(micro_batches=10**30)),
    "skipped_steps": ("skipped_steps", lambda s: s.update(skipped_steps=99)),
    "bad_steps": ("bad_steps", lambda s: s.update(bad_steps=1.5)),
    "world_size": ("world_size", lambda s: s.update(world_size=0)),
    "scheduler keys": ("scheduler", lambda s: s.update(scheduler={})),
    "scheduler base_lrs": ("scheduler", lambda s: s["scheduler"].update(base_lrs=["a"])),
    "scheduler foreign key": ("scheduler", lambda s: s["scheduler"].update(optimizer=1)),
    "scheduler last_epoch": ("scheduler", lambda s: s["scheduler"].update(last_epoch=99)),
    "ema num_updates": ("ema", lambda s: s["ema"].update(num_updates=-3)),
    "config": ("config", lambda s: s.update(config=[1, 2])),
}


@pytest.mark.parametrize("edit", list(STATE_EDITS))
def test_corrupted_state_field_is_refused_on_resume(toy_run, tmp_path, capsys, edit):
    field, change = STATE_EDITS[edit]
    run = copy_run(toy_run[1], tmp_path)
    edit_json(run / "checkpoints" / "step_000004" / "state.json", change)
    before = snapshot(run)
    code, _, err = resume(capsys, toy_run[0], run)
    one_line_error(code, err, "state.json", field)
    assert snapshot(run) == before


@pytest.mark.parametrize("edit", ["step abc", "step -50"])
def test_corrupted_step_is_refused_by_sample_and_info(toy_run, tmp_path, capsys, edit):
    field, change = STATE_EDITS[edit]
    run = copy_run(toy_run[1], tmp_path)
    edit_json(run / "checkpoints" / "step_000004" / "state.json", change)
    for argv in (("sample", run, "--out", tmp_path / "s.npz"), ("info", run)):
        code, _, err = run_cli(capsys, *argv)
        one_line_error(code, err, "state.json", field)


@pytest.mark.parametrize("key,value", [("lr", "fast"), ("betas", [0.9]), ("eps", -1.0),
                                       ("amsgrad", "yes"), ("foreign", 1)])
def test_corrupted_optimizer_group_is_refused(toy_run, tmp_path, capsys, key, value):
    run = copy_run(toy_run[1], tmp_path)
    edit_json(run / "checkpoints" / "step_000004" / "optimizer.json",
              lambda o: o["param_groups"][0].update({key: value}))
    before = snapshot(run)
    code, _, err = resume(capsys, toy_run[0], run)
    one_line_error(code, err, "optimizer.json", key)
    assert snapshot(run) == before


@pytest.mark.parametrize("shape", ["abc", [0], [2.5], "none"])
def test_corrupted_data_shape_in_run_json_is_named(toy_run, tmp_path, capsys, shape):
    run = copy_run(toy_run[1], tmp_path)
    edit_json(run / "run.json", lambda r: r.update(data_shape=shape))
    code, _, err = run_cli(capsys, "sample", run, "--out", tmp_path / "s.npz")
    one_line_error(code, err, "run.json", "data_shape")


def poison(path: Path) -> None:
    tensors = load_file(path)
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], math.nan)
    save_file(tensors, path)


def test_nan_weights_are_named_at_load(toy_run, tmp_path, capsys):
    run = copy_run(toy_run[1], tmp_path)
    ckpt = run / "checkpoints" / "step_000004"
    poison(ckpt / "ema.safetensors")
    code, _, err = run_cli(capsys, "sample", run, "--out", tmp_path / "s.npz")
    one_line_error(code, err, "ema.safetensors", "non-finite")
    poison(ckpt / "model.safetensors")
    before = snapshot(run)
    code, _, err = resume(capsys, toy_run[0], run)
    one_line_error(code, err, "model.safetensors", "non-finite")
    assert snapshot(run) == before
    code, out, err = run_cli(capsys, "info", run)  # info still describes it
    assert code == 0 and "non-finite" in out + err


class Poisoned(torch.nn.Module):
    """A linear model whose weights turn NaN on the loss call ``poison_at`` (as if an update
    overflowed), so every later step is non-finite."""

    def __init__(self, poison_at: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.calls, self.poison_at = 0, poison_at

    def loss(self, batch, generator=None):
        self.calls += 1
        if self.calls == self.poison_at:
            with torch.no_grad():
                self.lin.weight.fill_(math.nan)
        return (self.lin(batch) - batch).pow(2).sum(1)


def test_nan_guard_keeps_and_names_the_last_finite_checkpoint(tmp_path):
    cfg = {"steps": 20, "batch_size": 16, "lr": 1e-2, "log_every": 1, "ckpt_every": 1,
           "keep_last": 2, "max_bad_steps": 4}
    trainer = Trainer(Poisoned(poison_at=3), torch.randn(64, 2), cfg, tmp_path, progress=False)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit()
    msg = str(info.value)
    assert "step_000002" in msg and "last good" not in msg
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001", "step_000002"]


# --------------------------------------------------------------------------- unwritable folders
def test_unwritable_out_folder_is_named(toy_run, tmp_path, capsys):
    """A real PermissionError, root included: /sys refuses new folders (EPERM)."""
    target = Path("/sys/trilemma-hostile-test/run")
    try:
        target.parent.mkdir()
    except PermissionError:
        pass
    except OSError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"/sys refuses with {err}, not a PermissionError")
    else:  # pragma: no cover - /sys is writable here: nothing to test
        target.parent.rmdir()
        pytest.skip("/sys is writable on this machine")
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", target)
    one_line_error(code, err, "/sys/trilemma-hostile-test", "ermission")


def test_checkpoint_write_failure_names_the_path_and_keeps_the_last(toy_run, tmp_path, capsys,
                                                                    monkeypatch):
    """Root may write anywhere, so the failing write is simulated: the second checkpoint's
    safetensors write raises PermissionError."""
    import trilemma.train.checkpoint as ckpt_mod

    real, calls = ckpt_mod._write_safetensors, []

    def failing(path, tensors, metadata):
        calls.append(path)
        if "step_000004" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, tensors, metadata)

    monkeypatch.setattr(ckpt_mod, "_write_safetensors", failing)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", run, "--quiet")
    one_line_error(code, err, "step_000004", "Permission denied", "step_000002")
    assert [p.name for p in list_checkpoints(run)] == ["step_000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- half-deleted
@pytest.mark.parametrize("missing", ["state.json", "model.safetensors"])
def test_half_deleted_checkpoint_is_removed_on_resume(toy_run, tmp_path, capsys, missing):
    run = copy_run(toy_run[1], tmp_path)
    (run / "checkpoints" / "step_000002" / missing).unlink()
    code, _, err = resume(capsys, toy_run[0], run)
    assert code == 0, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000004", "step_000006"]
    assert [r["step"] for r in log_rows(run)] == [str(s) for s in range(1, 7)]


def test_keep_last_cleanup_killed_midway_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    import trilemma.train.checkpoint as ckpt_mod

    x = torch.randn(64, 2)
    cfg = {"steps": 3, "batch_size": 16, "log_every": 1, "ckpt_every": 1, "keep_last": 1}
    real = shutil.rmtree

    def killed(path, *args, **kwargs):
        victim = Path(path)
        for f in sorted(victim.rglob("*"))[:1]:  # one file gone, then the kill
            f.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(Poisoned(poison_at=-1), x, cfg, tmp_path, progress=False).fit()
    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", real)
    steps = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step")]
    assert steps == ["step_000002"]  # step_000001 was renamed aside before its deletion
    Trainer(Poisoned(poison_at=-1), x, cfg, tmp_path, progress=False).fit(resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000003"]
