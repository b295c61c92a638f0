"""Shared test setup: the tool environment and the seed every random test uses and prints."""
import os

import pytest

from forma import toolenv

SEED = int(os.environ.get("FORMA_SEED", "20261122"))


def pytest_configure(config):
    toolenv.apply()


def pytest_report_header(config):
    return f"forma random seed: {SEED} (set FORMA_SEED to reproduce another run)"


@pytest.fixture
def seed():
    return SEED
