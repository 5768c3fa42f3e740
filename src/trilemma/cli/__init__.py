"""The ``trilemma`` command line: argument parsing (:mod:`.parser`) plus calls into the
library (:mod:`.commands`).

Commands: ``train`` (a run folder from a YAML config; ``--resume``), ``sample`` (PNG or NPZ
from a trained run), ``info`` (describe a run), ``evaluate`` (quality, diversity and speed of
samplers on trained runs, with an HTML report), ``report`` (merge evaluations), ``bench`` (the
oracle sampler benchmark), ``features train`` (the classifier behind FD-<dataset>), ``config
show`` (a config resolved with its defaults), ``export`` (TorchScript) and ``inpaint`` (fill
in masked pixels). Under ``torchrun -m trilemma.cli train ...`` every rank trains (DDP); rank 0
writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# OpenMP threads that spin while waiting make a busy CPU several times slower
# (docs/BENCHMARKS.md, "Training throughput"); OpenMP reads this when torch loads, below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import ConfigError
from ..train import CheckpointError, TrainingDivergedError
from .commands import (
    CLIError,
    cmd_bench,
    cmd_evaluate,
    cmd_features,
    cmd_info,
    cmd_report,
    cmd_sample,
    cmd_train,
)
from .inpaint import cmd_inpaint
from .parser import PROG, build_parser
from .tools import cmd_config, cmd_export

__all__ = ["CLIError", "COMMANDS", "PROG", "build_parser", "main"]


# --------------------------------------------------------------------------- main
COMMANDS = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info,
            "evaluate": cmd_evaluate, "report": cmd_report, "bench": cmd_bench,
            "features": cmd_features, "config": cmd_config, "export": cmd_export,
            "inpaint": cmd_inpaint}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trilemma`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ConfigError, CheckpointError, FileNotFoundError, FileExistsError,
            NotADirectoryError) as err:
        msg = str(err)
        if isinstance(err, ConfigError) and len(err.problems) > 1:
            msg = "the config has problems:\n  " + "\n  ".join(err.problems)
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `trilemma info RUN | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


