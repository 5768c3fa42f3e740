"""The smaller ``trilemma`` commands and the help text around all of them: ``config show``
(the resolved config with every default), ``export`` (TorchScript, diffusers), the examples
in every subcommand's ``--help`` epilog and the command list of ``trilemma --help``; plus the
``sample --out DIR/`` writer."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from torch import Tensor

from ..diffusers_export import export_diffusers
from ..export import ExportError, export_torchscript
from ..runs import RUN_CONFIG, read_json
from ..sample_files import save_image_files
from ..setup import Config, ConfigError, apply_overrides, load_run, read_yaml

#: ``--help`` examples of every command (shown under "examples:")
EPILOGS: dict[str, str] = {
    "train": """\
  trilemma train configs/toy_vp.yaml --out runs/toy_vp          # 2-3 CPU minutes
  trilemma train configs/toy_vp.yaml --out runs/toy_vp --resume --set train.steps=8000
  trilemma train configs/folder_vp.yaml --out runs/mine --set data.path=my_pngs/
  .venv/bin/torchrun --nproc_per_node=2 -m trilemma.cli train configs/toy_vp.yaml --out runs/ddp""",
    "sample": """\
  trilemma sample runs/toy_vp --sampler dpm2m --nfe 20 --n 2000 --out toy_vp.png
  trilemma sample runs/digits_vp --n 64 --out samples.npz       # the config's sampler and NFE
  trilemma sample runs/mine --sampler ddim --nfe 50 --n 100 --out pngs/   # one PNG per sample
  trilemma sample runs/digits_vp_cond --label 3 --guidance 2 --out threes.png  # data.labels run
  trilemma sample runs/digits_vp --classifier runs/digits_classifier --label 3 \\
      --classifier-scale 2 --out threes.png                     # classifier guidance""",
    "info": """\
  trilemma info runs/toy_vp
  trilemma info runs/toy_vp/checkpoints/step_006000""",
    "evaluate": """\
  trilemma evaluate runs/toy_vp --samplers dpm2m:10/20,em:200 --n 2000 --out out/eval/toy
  trilemma evaluate runs/digits_vp runs/digits_cld --samplers dpm2m:10/20,sscs:20/50 \\
      --n 1000 --out out/eval/digits
  trilemma evaluate runs/mine --samplers ddim:20 --n 500 --no-metrics --out out/eval/mine
  trilemma evaluate runs/digits_vp_cond --samplers dpm2m:20 --guidance 0/1/2 --out out/eval/w
  trilemma evaluate runs/digits_vp --classifier runs/digits_classifier \\
      --classifier-scale 0/1/2/4 --samplers dpm2m:20 --n 500 --out out/eval/cg""",
    "report": """\
  trilemma report out/eval/vp out/eval/cld --out out/eval/both""",
    "bench": """\
  trilemma bench --quick --out out/bench_quick                  # 1-2 CPU minutes
  trilemma bench --processes vp cld --samplers em dpm2m sscs --nfes 10 20 50""",
    "features": """\
  trilemma features train digits
  trilemma features train mnist --data-root data/mnist --out clf_mnist.safetensors""",
    "config": """\
  trilemma config show configs/digits_vp.yaml
  trilemma config show configs/folder_vp.yaml --set data.size=32
  trilemma config show runs/toy_vp                              # a run's resolved config""",
    "export": """\
  trilemma export runs/toy_vp --torchscript toy_vp_score.pt
  trilemma export runs/digits_diffusers --diffusers out/digits_pipeline  # needs diffusers""",
}


def add_tool_parsers(sub: Any) -> None:
    """``trilemma config show`` and ``trilemma export``."""
    p = sub.add_parser("config", help="show a config resolved with every default",
                       description="Configs: validate one and print it resolved, with every "
                       "default filled in, as the run folder's config.yaml will hold it.")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True
    s = csub.add_parser("show", help="print the resolved config (YAML)",
                        description="Validate CONFIG (a YAML file, or a run folder) and print "
                        "it with every default filled in.")
    s.add_argument("config", metavar="CONFIG_OR_RUN_DIR")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value as trilemma train does (repeatable)")
    p = sub.add_parser("export", help="export a trained model (TorchScript, diffusers)",
                       description="Export a trained run: its score function as TorchScript "
                       "(network and parametrisation; f(u, t) -> score, t of shape (B,) in "
                       "[eps, T]), or a VP run with a diffusers_unet network as a diffusers "
                       "pipeline folder.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--torchscript", metavar="FILE", help="write the traced score function")
    p.add_argument("--diffusers", metavar="DIR",
                   help="write a folder diffusers.DiffusionPipeline.from_pretrained loads (VP "
                   "runs with model.net.name: diffusers_unet; UNet weights + a DDIM scheduler "
                   "whose discrete schedule matches the VP process)")


def finish_parser(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Examples under every subcommand's help, and the command list in ``trilemma --help``."""
    lines = []
    for name, p in sub.choices.items():
        if name in EPILOGS:
            p.epilog = "examples:\n" + EPILOGS[name]
            p.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in sub._choices_actions:  # argparse keeps each command's help here
        lines.append(f"  {action.dest:<10}{action.help}")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = ("Score-based diffusion models: train, sample, evaluate, export.\n\n"
                          "commands:\n" + "\n".join(lines) + "\n\n"
                          "`trilemma COMMAND --help` shows each command's options and examples;\n"
                          "docs/GUIDE.md has the whole picture.")
    parser.epilog = ("a first run, from the checkout:\n"
                     "  trilemma train configs/toy_vp.yaml --out runs/toy_vp\n"
                     "  trilemma sample runs/toy_vp --sampler dpm2m --nfe 20 --n 2000 "
                     "--out toy_vp.png")


# --------------------------------------------------------------------------- sample --out DIR/
def is_dir_target(text: str) -> bool:
    """Whether ``sample --out`` names a folder: ends in a path separator or is a directory."""
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def write_png_folder(folder: Path, samples: Tensor) -> list[Path]:
    """One PNG per image sample (clamped to [-1, 1], 8 bits) in ``folder``."""
    try:
        return save_image_files(samples, folder)
    except ValueError as err:
        raise ConfigError([f"--out {folder}/: {err}"]) from None


# --------------------------------------------------------------------------- commands
def cmd_config(args: argparse.Namespace) -> int:
    """``trilemma config show``: the resolved config as YAML."""
    src = Path(args.config)
    if src.is_dir():
        if not (src / RUN_CONFIG).is_file():
            raise ConfigError([f"{src} is a folder without {RUN_CONFIG}: give a YAML config "
                               "or a run folder"])
        raw = Config.from_dict(read_json(src / RUN_CONFIG), check_paths=False).to_dict()
    else:
        raw = read_yaml(src)
    config = Config.from_dict(apply_overrides(raw, args.overrides), check_paths=False)
    print(f"# {src}, resolved (every default filled in)")
    print(config.to_yaml(), end="")
    missing = [f"data.{k}" for k in ("path", "root", "images", "labels")
               if isinstance(config.data.get(k), str)
               and not Path(config.data[k]).expanduser().exists()]
    if missing:
        print(f"trilemma: note: {', '.join(missing)} does not exist here (set it with --set)",
              file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``trilemma export``: TorchScript and/or a diffusers pipeline folder."""
    if not (args.torchscript or args.diffusers):
        raise ConfigError(["export: give --torchscript FILE and/or --diffusers DIR"])
    model, config, saved = load_run(args.run, "cpu")
    try:
        if args.torchscript:
            path = export_torchscript(model, args.torchscript)
            print(f"TorchScript score function of {saved.weights} (step {saved.step}) -> "
                  f"{path}: torch.jit.load('{path}')(u, t) with t of shape (B,)")
        if args.diffusers:
            path = export_diffusers(model, config.to_dict(), args.diffusers)
            print(f"diffusers pipeline of {saved.weights} (step {saved.step}) -> {path}: "
                  f"diffusers.DiffusionPipeline.from_pretrained('{path}')")
    except ExportError as err:
        raise ConfigError([f"export: {err}"]) from None
    return 0
