"""scikit-learn's handwritten digits (1797 images, 8x8, 10 classes), scaled to [-1, 1]."""

from __future__ import annotations

import torch

SPLIT_SEED = 0
TEST_FRACTION = 0.3


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): x float32 (N, 1, 8, 8) in [-1, 1], y int64.

    A fixed stratified 70/30 split (random_state=0); the models and the feature classifier train
    on the train split, the Fréchet distance compares samples against the test split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = torch.arange(len(y))
    tr, te = train_test_split(idx.numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                              stratify=y.numpy())
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return x[tr], y[tr], x[te], y[te]
