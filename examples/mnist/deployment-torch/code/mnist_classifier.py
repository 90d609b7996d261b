"""The torch network of the mnist-torch-dpl deployment.

It lives beside batch_driver.py, which imports it with a plain `from mnist_classifier import ...`
(the code folder is importable, as on Azure). The training script imports it too, so the
state_dict in ../model/model.pt always matches this class.
"""

from torch import nn


class MnistClassifier(nn.Module):
    """A small CNN for 28x28 grayscale digits: input (N, 1, 28, 28) floats in 0..1, output logits (N, 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 x 7 x 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
