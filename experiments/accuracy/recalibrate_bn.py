"""Batch-norm running statistics as a cause of the test-error swings (issue 7, diagnosis).

    RECLRA_DATA=… python experiments/accuracy/recalibrate_bn.py runs/acc_resnet/*/s0 …

For each run folder: the test error of its last checkpoint as the run evaluated it (batch-norm
running averages, momentum 0.1), then after re-estimating every batch-norm layer's statistics as
a plain average over the first 10,000 training images (train mode, no weight touched), with the
run's own data settings.
"""

from __future__ import annotations

import sys

import torch

from reclra.config import load_config
from reclra.data import iterate_minibatches, load_dataset
from reclra.train import _build, evaluate, read_checkpoint


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    print("| run | test error %, running statistics | test error %, re-estimated |")
    print("| --- | --- | --- |")
    for run in runs:
        cfg = load_config(f"{run}/config.yaml")
        d = cfg.data
        data = load_dataset(
            d.dataset, limit_train=d.limit_train, val_size=d.val_size, seed=cfg.train.seed
        )
        rule = _build(cfg, data.input_shape, data.num_classes)
        rule.load_state_dict(read_checkpoint(f"{run}/checkpoint.pt")["rule"])
        before = evaluate(rule, data.test).error
        norms = [
            m for m in rule.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
        rule.net.train()
        with torch.no_grad():
            for i, (x, _) in enumerate(iterate_minibatches(data.train, 500, shuffle=False)):
                rule.net(x)
                if i == 19:
                    break
        print(f"| {run} | {before:.2f} | {evaluate(rule, data.test).error:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
