"""What a run reports while it trains: ``log.csv``, the progress bar, the model's diagnosis.

:class:`TrainLog` gathers the good steps of each log interval and, every ``log_every`` steps,
writes a ``log.csv`` row (rank 0), sets the progress bar's postfix (a tqdm bar on a terminal,
plain lines otherwise: :mod:`~trilemma.train.progress`) and hands the model's ``diagnose`` the
history of interval means, logging each new warning once.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lossplot import save_loss_plot
from .phases import Diagnose, StepResult
from .progress import progress_bar

logger = logging.getLogger("trilemma.train")


def check_tensorboard() -> None:
    """Raise a clear ``ImportError`` when TensorBoard (an optional dependency) is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError("the TensorBoard writer (train.tensorboard: true) needs the optional "
                          "tensorboard package: pip install tensorboard")


def open_tensorboard(out_dir: Path) -> Any:
    """A ``SummaryWriter`` logging to ``out_dir/tensorboard`` (optional dependency)."""
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def ddp_message(info: Any, batch_size: int) -> str:
    """The line the trainer prints on rank 0 when it runs data-parallel (``info``: a
    :class:`~trilemma.train.distributed.DistInfo`)."""
    return (f"trilemma.train: DDP with {info.world_size} ranks (backend {info.backend or '?'}, "
            f"device {info.device.type}); global batch {batch_size} = "
            f"{batch_size // info.world_size} per rank")


def _mean(values: Sequence[float]) -> float:
    """Mean of ``values`` (nan when empty)."""
    return sum(values) / len(values) if values else math.nan


class CsvLog:
    """``log.csv``: one row every ``log_every`` steps; on resume rows past the step are cut.

    Multi-phase models add ``extra`` columns (``loss_<phase>``, ``grad_norm_<phase>``).
    """

    FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "skipped")

    def __init__(self, path: Path, keep_until: int | None, extra: tuple[str, ...] = ()) -> None:
        self.fields = self.FIELDS + tuple(extra)
        rows: list[list[str]] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header == list(self.fields):
                    for row in reader:
                        try:
                            if row and int(row[0]) <= keep_until:
                                rows.append(row)
                        except ValueError:
                            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.fields)
            w.writerows(rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")  # closed in close()
        self._writer = csv.writer(self._file)

    def write(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float,
        steps_per_s: float,
        skipped: int,
        extra: tuple[float, ...] = (),
    ) -> None:
        """Append one row and flush."""
        self._writer.writerow(
            [step, f"{loss:.8g}", f"{lr:.8g}", f"{grad_norm:.6g}", f"{steps_per_s:.4g}", skipped]
            + [f"{v:.8g}" for v in extra]
        )
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class TrainLog:
    """The log of one ``fit``: interval means to ``log.csv``, the progress bar and diagnosis.

    ``phases`` are the model's declared phases (``()`` for a one-loss model): each adds the
    ``loss_<phase>`` and ``grad_norm_<phase>`` columns and shows its loss on the bar. The CSV
    (and the diagnosis) exist on the main rank only; ``keep_until`` is the step whose rows an
    existing ``log.csv`` keeps (None starts it afresh).
    """

    def __init__(
        self,
        out_dir: Path,
        phases: tuple[str, ...],
        main: bool,
        progress: bool,
        start: int,
        end: int,
        keep_until: int | None,
        diagnose: Diagnose | None,
        tensorboard: bool = False,
    ) -> None:
        self.phases = phases
        self.out_dir = out_dir
        extra = tuple(f"loss_{p}" for p in phases) + tuple(f"grad_norm_{p}" for p in phases)
        self.csv = CsvLog(out_dir / "log.csv", keep_until, extra) if main else None
        self.tb = open_tensorboard(out_dir) if (main and tensorboard) else None
        self.bar = progress_bar(
            total=end,
            initial=start,
            disable=not (progress and main),
            desc="train",
            dynamic_ncols=True,
            unit="step",
        )
        self.diagnose = diagnose if main else None
        self.history: list[tuple[int, dict[str, float]]] = []
        self.warned: set[str] = set()
        self.last_loss = math.nan
        self.last_phase: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        """Start a new log interval."""
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.phase_vals: dict[str, list[tuple[float, float]]] = {p: [] for p in self.phases}
        self.train_time, self.interval_steps = 0.0, 0

    def add(self, seconds: float, result: StepResult) -> None:
        """Count a step that took ``seconds``; a good step's losses and norms join the means."""
        self.train_time += seconds
        self.interval_steps += 1
        if result.ok:
            self.losses.append(result.loss)
            self.norms.append(result.grad_norm)
            for p in self.phases:
                r = result.phases[p]
                self.phase_vals[p].append((r.loss, r.grad_norm))
        self.bar.update(1)

    def report(self, step: int, lr: float, skipped: int) -> None:
        """End the interval at ``step``: write the row, update the bar, run the diagnosis."""
        self.last_loss = _mean(self.losses)
        sps = self.interval_steps / self.train_time if self.train_time > 0 else math.nan
        self.last_phase = {p: _mean([v[0] for v in vals]) for p, vals in self.phase_vals.items()}
        if self.csv is not None:
            extra = tuple(self.last_phase.values()) + tuple(
                _mean([v[1] for v in vals]) for vals in self.phase_vals.values()
            )
            self.csv.write(step, self.last_loss, lr, _mean(self.norms), sps, skipped, extra)
        if self.tb is not None:
            scalars = {"loss": self.last_loss, "lr": lr, "grad_norm": _mean(self.norms),
                       "steps_per_s": sps, "skipped": skipped}
            scalars.update({f"loss_{p}": v for p, v in self.last_phase.items()})
            for name, value in scalars.items():
                if math.isfinite(value):
                    self.tb.add_scalar(f"train/{name}", value, step)
        shown = (
            {f"loss_{p}": f"{v:.4g}" for p, v in self.last_phase.items()}
            if self.phases
            else {"loss": f"{self.last_loss:.4g}"}
        )
        self.bar.set_postfix(**shown, lr=f"{lr:.3g}", skipped=skipped, refresh=False)
        if self.diagnose is not None:
            self.history.append((step, dict(self.last_phase) or {"loss": self.last_loss}))
            message = self.diagnose(self.history)
            if message and message not in self.warned:
                self.warned.add(message)
                logger.warning("step %d: %s", step, message)
        self._reset()

    def plot(self) -> None:
        """Redraw ``loss.png`` from ``log.csv`` (main rank; a failure is logged, not raised)."""
        if self.csv is None:
            return
        try:
            save_loss_plot(self.out_dir / "log.csv")
        except Exception as err:  # noqa: BLE001 - a plot must never stop training
            logger.warning("could not draw %s: %s", self.out_dir / "loss.png", err)

    def close(self) -> None:
        """Close the bar, the CSV file and the TensorBoard writer; draw ``loss.png``."""
        self.bar.close()
        if self.csv is not None:
            self.csv.close()
            self.plot()
        if self.tb is not None:
            self.tb.close()
