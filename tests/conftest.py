"""What several test files share: the project root on the import path, and one generated split of
each task (`raw`), made once for the whole session."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import DATA_SIZES, TASKS, DataConfig, generate_split  # noqa: E402


@pytest.fixture(scope="session")
def raw():
    """A larger tiny training split of each task, with its symbolic scenes (test_data.py, test_labels.py)."""
    cfg = DataConfig(**{**DATA_SIZES["tiny"], "cache_dir": "", "workers": 1, "train_examples": 1152})
    return cfg, {t: generate_split(cfg, t, "train") for t in TASKS}
