"""The Python examples of README.md and docs/GUIDE.md run (slow: run with -m slow).

Training calls are shortened (30 steps, no periodic samples) through the entry point that
``trilemma.train(...)`` forwards to; examples that need trained digits runs, an evaluation
folder or diffusers are skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trilemma
import trilemma.api

ROOT = Path(__file__).resolve().parents[1]
NEEDS = ("evaluate_run", "load_classifier", "runs/digits_vp", "from diffusers")
BLOCKS = [(doc, i, block) for doc in ("README.md", "docs/GUIDE.md")
          for i, block in enumerate(re.findall(r"```python\n(.*?)```",
                                               (ROOT / doc).read_text(), re.S))
          if not any(n in block for n in NEEDS)]


def _short(config, out, **kw):
    overrides = [o for o in kw.pop("overrides", ()) if "kl_anneal_steps" not in o]
    overrides += ["train.steps=30", "train.warmup_steps=0", "train.sample_every=0",
                  "train.ckpt_every=0"]
    if "toy_pd" in str(config):  # progressive rounds must fit train.steps (4 rounds x 5)
        overrides.append("model.steps_per_round=5")
    return trilemma.api.train(config, out, overrides=overrides, progress=False, **kw)


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "index", "block"), BLOCKS,
                         ids=[f"{d}#{i}" for d, i, _ in BLOCKS])
def test_python_example_runs(doc, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    trilemma.train.set_entry_point(_short)
    try:
        exec(compile(block, f"{doc} example {index}", "exec"), {})
    finally:
        trilemma.train.set_entry_point(trilemma.api.train)
