"""reproduce.py end to end on its tiny protocol: results files, consistent numbers, two figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ("grlnet_standard", "grlnet_released", "dcase_autoencoder")


def test_tiny_protocol_writes_results_and_figures(tmp_path):
    run_script("reproduce.py", "--protocol", "tiny", "--out", str(tmp_path), timeout=120)
    folder = tmp_path / "tiny"
    assert (folder / "results.md").is_file()
    results = json.loads((folder / "results.json").read_text())
    methods = results["tasks"]["tiny"]["methods"]
    assert set(methods) == set(METHODS)
    for method in METHODS:
        auc = methods[method]["auc"]
        assert len(auc["per_seed"]) == len(results["seeds"]) == 1
        assert all(0.0 <= value <= 1.0 for value in auc["per_seed"])
        assert auc["mean"] == pytest.approx(np.mean(auc["per_seed"]))
    assert "python reproduce.py --protocol tiny" in (folder / "results.md").read_text()
    for name in ("auc_per_epoch.png", "score_distributions.png"):
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
