"""Train the torch model of the mnist-torch-dpl deployment (CPU, fixed seeds, well under a minute).

    python examples/mnist/train/train_torch.py

Writes examples/mnist/deployment-torch/model/model.pt (a state_dict of MnistClassifier, defined in
deployment-torch/code/mnist_classifier.py) and rewrites the sample folder via make_data.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DEPLOYMENT_DIR = HERE.parent / "deployment-torch"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(DEPLOYMENT_DIR / "code"))

import make_data  # noqa: E402
from mnist_classifier import MnistClassifier  # noqa: E402

SEED = 0
EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # bit-for-bit repeatable runs, and fast enough for this size


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def main() -> None:
    started = time.perf_counter()
    set_seeds(SEED)
    x_train, y_train, x_test, y_test = make_data.main()
    xt, yt = to_tensor(x_train), torch.from_numpy(y_train)
    xv, yv = to_tensor(x_test), torch.from_numpy(y_test)

    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    generator = torch.Generator().manual_seed(SEED)

    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        print(f"epoch {epoch:2d}  loss {total / len(xt):.4f}  test accuracy {accuracy(model, xv, yv):.4f}")

    model.eval()
    out = DEPLOYMENT_DIR / "model" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"test accuracy: {accuracy(model, xv, yv):.4f} on {len(xv)} held-out images")
    print(f"saved {out.relative_to(HERE.parent.parent.parent)} ({out.stat().st_size} bytes)")
    print(f"training took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
