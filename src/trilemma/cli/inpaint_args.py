"""The ``trilemma inpaint`` arguments (kept apart from :mod:`.inpaint`, which imports the
commands module that imports the parser)."""

from __future__ import annotations

import argparse
from typing import Any

from ..masks import PRESETS
from ..samplers.inpaint import REFUSED

__all__ = ["EPILOG", "add_inpaint_parser"]

EPILOG = """\
  trilemma inpaint runs/digits_vp --image digit.png --mask right --n 8 --out filled.png
  trilemma inpaint runs/digits_cld --image digits.npz --mask center --sampler sscs --nfe 200 \\
      --resample 2 --jump 10 --out filled.npz
  trilemma inpaint runs/digits_vp --image digit.png --mask mask.png --sampler ddim \\
      --opt eta=1 --out filled.png"""


def add_inpaint_parser(sub: Any) -> None:
    """The ``inpaint`` sub-parser."""
    p = sub.add_parser(
        "inpaint", help="fill in masked pixels of images (inpainting, outpainting)",
        description="Complete images where a mask hides them: replacement of the known pixels "
        "by draws of the forward process at every step, with RePaint resampling as an option.",
        epilog="examples:\n" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT", help="a trained 'score' run")
    p.add_argument("--image", required=True, metavar="FILE",
                   help="PNG (8-bit grey or RGB, the run's image size) or .npz (one array, "
                   "or 'images'; (C,H,W), (H,W) or (B,C,H,W); floats in [-1, 1] or uint8)")
    p.add_argument("--mask", required=True, metavar="FILE_OR_PRESET",
                   help="PNG/.npz of the image size (PNG: white = known; npz: 1 = known, 0 = "
                   "to fill) or a preset naming the region to fill: " + ", ".join(PRESETS)
                   + " (random:P = P%% of the pixels, outpaint:W = a W-pixel border)")
    p.add_argument("--sampler", default="em",
                   help="em (default), pc, ddim, euler, heun, rk4 or sscs (CLD); the "
                   "deterministic ones are heuristics. Refused: " + ", ".join(REFUSED))
    p.add_argument("--nfe", type=int, default=200,
                   help="total score calls, resampling included (default 200)")
    p.add_argument("--resample", type=int, default=0, metavar="R",
                   help="RePaint: redo each jump R more times (default 0: replacement only)")
    p.add_argument("--jump", type=int, default=1, metavar="J",
                   help="RePaint jump length in grid steps (default 1)")
    p.add_argument("--n", type=int, default=1, help="completions per image (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed, and the seed of a random mask (default 0)")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --opt eta=1 (DDIM), --opt n_corrector=2 (PC), --opt "
                   "velocity=keep (CLD: keep the sampler's velocities of known pixels); "
                   "repeatable")
    p.add_argument("--out", required=True, metavar="FILE",
                   help=".png (grid: masked inputs, completions, originals) or .npz")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
