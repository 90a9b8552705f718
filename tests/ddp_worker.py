"""Worker for tests/test_distributed.py: train a small BatchNorm-free CNN with the Trainer, once per sampler
kind, and write the histories and final predictions (rank 0). Run as a plain script (one process) or under
``torchrun --nproc_per_node=2`` (gloo); the two outputs must agree.

    python tests/ddp_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fgvc_lib import distributed as ddp
from fgvc_lib.data.samplers import ClassAwareSampler, ReversedPairDataset
from fgvc_lib.engine import Trainer, create_strategy, seed_everything
from fgvc_lib.models.bbn import cumulative_alpha


class TinyNet(nn.Module):
    """No BatchNorm, no dropout: a data-parallel step equals the single-process step up to float order."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.cb = nn.Linear(32, 16)
        self.rb = nn.Linear(32, 16)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.branch_features(x, "c"), self.branch_features(x, "r"), 0.5)

    # the BBN interface of fgvc_lib.models.bbn.BBN (two branches, one classifier on the concatenation)
    def branch_features(self, x: torch.Tensor, branch: str) -> torch.Tensor:
        return torch.relu((self.cb if branch == "c" else self.rb)(self.trunk(x)))

    def mix(self, f_c: torch.Tensor, f_r: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.fc(2 * torch.cat([alpha * f_c, (1 - alpha) * f_r], 1))


def data() -> tuple[TensorDataset, TensorDataset, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    counts = [40, 20, 10, 6]  # long-tailed
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = torch.randn(len(labels), 3, 8, 8, generator=g) + labels.view(-1, 1, 1, 1) * 0.3
    val_labels = torch.arange(4).repeat(5)[:19]  # 19: the ranks hold 10 and 9 items
    val_x = torch.randn(len(val_labels), 3, 8, 8, generator=g) + val_labels.view(-1, 1, 1, 1) * 0.3
    return TensorDataset(x, labels), TensorDataset(val_x, val_labels), labels.numpy()


def loader(dataset, *, shuffle: bool, batch_size: int = 8, sampler=None) -> DataLoader:
    options = dict(batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                   generator=torch.Generator().manual_seed(3))
    if sampler is not None:
        options.pop("shuffle")
        options["sampler"] = sampler
    return DataLoader(dataset, **ddp.shard_loader_options(dataset, options))


def train(kind: str) -> dict:
    train_set, val_set, labels = data()
    seed_everything(0)
    model = TinyNet()
    strategy = None
    if kind == "shuffle":
        train_loader = loader(train_set, shuffle=True)
    elif kind in ("reversed", "balanced"):
        sampler = ClassAwareSampler(labels, kind, generator=torch.Generator().manual_seed(5))
        train_loader = loader(train_set, shuffle=True, sampler=sampler)
    elif kind == "bbn":
        train_loader = loader(ReversedPairDataset(train_set, labels, kind="reversed", seed=2), shuffle=True)
        strategy = create_strategy("bbn", alpha_fn=lambda epoch: cumulative_alpha(epoch, 3))
    else:
        raise ValueError(kind)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss(),
                      epochs=3, strategy=strategy, seed=1, progress=False, log=None)
    history = trainer.fit(train_loader, loader(val_set, shuffle=False))
    logits, targets = trainer.predict(loader(val_set, shuffle=False))
    return {
        "history": [{k: v for k, v in row.items() if k != "seconds"} for row in history],
        "logits": logits.tolist(),
        "targets": targets.tolist(),
        "world_size": ddp.dist_env().world_size,
        "steps_per_epoch": len(train_loader),
    }


def main(out: str) -> None:
    ddp.init_distributed("cpu")
    results = {kind: train(kind) for kind in ("shuffle", "reversed", "balanced", "bbn")}
    if ddp.is_main_process():
        with open(out, "w") as fh:
            json.dump(results, fh)
    ddp.shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
