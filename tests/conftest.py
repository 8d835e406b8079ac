import pytest
import torch

from spikeforge.converter.training import train_classifier
from spikeforge.data import load_digits_split
from spikeforge.models import DigitsMLP, DigitsResNet


@pytest.fixture(scope="session")
def digits():
    return load_digits_split(seed=0)


@pytest.fixture(scope="session")
def trained_resnet(digits):
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    return train_classifier(DigitsResNet(), xtr, ytr, epochs=20, lr=0.05, seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits):
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    return train_classifier(DigitsMLP(), xtr, ytr, epochs=20, lr=0.05, seed=0)
