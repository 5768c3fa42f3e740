"""How well does a noise-conditional classifier (``model.method: noise_classifier``) tell the
classes apart at each noise level? Its accuracy on the held-out split noised by its own process.

    python benchmarks/noise_classifier_accuracy.py runs/digits_classifier

For each t, every test image is noised ``--draws`` times (``u_t ~ p(u_t | x0)``, seed 0) and
classified; the accuracy is the mean over images and draws, with chance at 1/num_classes.
Guidance only helps where the classifier beats chance: at large t it is near chance (the data
are gone), so there its gradient is small and noisy by construction.
"""

from __future__ import annotations

import argparse

import torch

import trilemma
from trilemma.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a noise_classifier run folder")
    parser.add_argument("--times", default="0.01,0.1,0.2,0.3,0.5,0.7,0.9")
    parser.add_argument("--draws", type=int, default=5, help="noise draws per image")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clf = trilemma.load(args.run)
    data = dict(clf.run_config.data)
    if "split" in data:  # the held-out split where the data set has one
        data["split"] = "test"
    ds = load_dataset(data)
    x, y = ds.data, ds.labels
    gen = torch.Generator().manual_seed(0)
    print(f"{args.run}: {clf.process.name}, {len(x)} held-out samples x {args.draws} draws, "
          f"chance {1 / clf.num_classes:.3f}")
    print("| t | alpha_t | accuracy |\n| --- | --- | --- |")
    for t in (float(s) for s in args.times.split(",")):
        tt = torch.full((len(x),), t)
        hits = 0
        for _ in range(args.draws):
            u, _ = clf.process.perturb(x, tt, gen)
            with torch.no_grad():
                hits += int((clf(u, tt).argmax(1) == y).sum())
        alpha = float(clf.process.mean_coef(torch.tensor([t]))[0, 0, 0])
        print(f"| {t:g} | {alpha:.3f} | {hits / (len(x) * args.draws):.3f} |")


if __name__ == "__main__":
    main()
