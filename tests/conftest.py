import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub retries on offline machines
os.environ.setdefault("WANDB_MODE", "offline")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import cl_adapters  # noqa: E402,F401  (torchvision shim first)
from cl_adapters.run import CONFIG_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/ with overrides, as the CLI would (references cached under the test's tmp dir)."""

    def _compose(*overrides: str):
        refs = [] if any(o.startswith("references.dir=") for o in overrides) else [f"references.dir={tmp_path}/refs"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=[*refs, *overrides])

    return _compose


@pytest.fixture(scope="session")
def digits():
    from cl_adapters.streams import split_digits

    return split_digits(n_tasks=5, seed=0)
