"""Progress bars that suit where they go: a tqdm bar on a terminal, plain lines in a log file.

A carriage-return bar written to a file or a pipe (``make demo > demo.log 2>&1``, a batch job)
leaves every redraw in the log. :func:`progress_bar` returns a tqdm bar when the stream it
writes to (stderr) is a terminal and a :class:`LineProgress` otherwise: the same interface,
printing one plain line at most every ``LINE_INTERVAL`` seconds and one at the end, e.g.::

    train: 1200/6000 (20%) [00:40<02:40, 30.1step/s, loss=0.52, lr=0.002]

``TRILEMMA_PROGRESS=bar`` or ``=lines`` forces one kind.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm as _tqdm
from tqdm.auto import tqdm as _auto_tqdm

#: seconds between two progress lines when the output is not a terminal
LINE_INTERVAL = 15.0
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, " \
              "{rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class LineProgress(_tqdm):
    """A tqdm bar that prints whole lines (no carriage returns): at most every
    ``mininterval`` seconds (default :data:`LINE_INTERVAL`) and once at the end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", LINE_INTERVAL)
        kwargs["maxinterval"] = max(float(kwargs["mininterval"]), 10.0)
        total = kwargs.get("total")
        if total is None and args and hasattr(args[0], "__len__"):
            total = len(args[0])
        kwargs.setdefault("bar_format", LINE_FORMAT if total else LINE_FORMAT_NO_TOTAL)
        kwargs["dynamic_ncols"] = False
        kwargs["ascii"] = True
        self._shown: str | None = None
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Print the current state as one line (an empty ``msg``, tqdm's "clear", prints
        nothing)."""
        if msg is None and self.n == self.initial and not self._closing:
            return False  # nothing done yet
        text = str(self) if msg is None else msg
        if not text.strip():
            return False
        if self._closing and text.strip() == self._shown:
            return False  # the last line already says it
        self.fp.write(text.strip() + "\n")
        self.fp.flush()
        self._shown = text.strip()
        return True

    def close(self) -> None:
        """Print the last state (unless already printed or ``leave=False``), then close."""
        self._closing = True
        if not self.disable and self.leave is not False:
            self.display()
        self.leave = False  # tqdm's close would print the line again, then a newline
        super().close()


def wants_lines(stream: Any = None) -> bool:
    """Whether progress written to ``stream`` (default stderr) should be plain lines."""
    forced = os.environ.get("TRILEMMA_PROGRESS", "").strip().lower()
    if forced in ("bar", "bars", "tqdm"):
        return False
    if forced in ("lines", "line", "plain"):
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return not (callable(isatty) and isatty())
    except (ValueError, OSError):  # a closed stream
        return True


def progress_bar(iterable: Any = None, **kwargs: Any) -> _tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal, :class:`LineProgress` otherwise (see the
    module docstring); a disabled bar (``disable=True``) prints nothing either way."""
    if wants_lines(kwargs.get("file")):
        kwargs.pop("dynamic_ncols", None)
        return LineProgress(iterable, **kwargs)
    return _auto_tqdm(iterable, **kwargs)
