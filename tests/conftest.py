"""Test set-up: one thread per process (busy-waiting OpenMP threads thrash on 2 shared cores)."""

import torch

torch.set_num_threads(1)
