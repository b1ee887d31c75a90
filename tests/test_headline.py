"""The headline metrics: what dvc.yaml declares as metrics, and how they derive from the detailed results."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rawdrift.headline import (GROUP, PREFIX, flatten, forensics_headline, optimize_headline, rounded,
                               summary_headline, write_all)

ROOT = Path(__file__).resolve().parents[1]


def declared(kind: str) -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for st in stages.values():
        body = st.get("do", st)
        out += [next(iter(e)) if isinstance(e, dict) else e for e in body.get(kind, [])]
    return out


def test_dvc_yaml_declares_only_headline_files_as_metrics():
    metrics = declared("metrics")
    assert metrics and all(m.startswith("metrics/headline/") for m in metrics), metrics
    plots = declared("plots")
    for detailed in ("metrics/crosseval/${item}.json", "metrics/corruptions/${item}.json",
                     "metrics/optimize/${item}.json", "metrics/train/${item.dataset}/${item.view}.json",
                     "plots/crosseval/${item}.csv"):
        assert detailed in plots, detailed
    assert {"metrics/summary.json", "metrics/rankings.json", "metrics/forensics/${item}.json"} <= set(declared("outs"))


def test_committed_headline_files_derive_from_the_committed_results(tmp_path):
    """`python -m rawdrift.headline` on the committed detailed results gives the committed headline files."""
    shutil.copytree(ROOT / "metrics", tmp_path / "metrics", ignore=shutil.ignore_patterns("headline"))
    written = write_all(tmp_path)
    assert len(written) == 1 + 2 * 2 + 24
    for path in written:
        rel = path.relative_to(tmp_path)
        assert json.loads(path.read_text()) == json.loads((ROOT / rel).read_text()), rel


def test_headline_keys_are_short_unique_and_numeric():
    keys = {}
    for path in sorted((ROOT / "metrics/headline").rglob("*.json")):
        for k, v in flatten(json.loads(path.read_text())).items():
            assert k not in keys, (k, path, keys.get(k))            # unique: dvc exp show heads columns by key
            assert isinstance(v, (int, float)) and len(k) <= 16, (k, v)
            keys[k] = path
    assert len(keys) < 100
    summary = json.loads((ROOT / "metrics/summary.json").read_text())
    head = summary_headline(summary)
    assert head["mic"]["drop"] == pytest.approx(summary["microscopy"]["drift_synthesis"]["drop"], rel=1e-3)
    assert head["dro"]["top3"] == len(summary["drone"]["corruptions"]["top_overlap"])


def test_forensics_and_optimize_headlines():
    sig = {"groups": {"all": {"safe_l2": 1.234567e-4, "fails_at": {"lambda": 100.0}},
                      "gamma": {"safe_l2": 0.0, "fails_at": None}}}
    assert forensics_headline("drone", sig) == {"dro": {"l2": {"all": 1.235e-4, "ga": 0.0}, "lam": {"all": 100.0}}}
    assert set(GROUP) >= {"all", "gamma"} and set(PREFIX) == {"microscopy", "drone"}
    opt = {"settings": {"learned_scale001": {"mode": "learned", "intensity": 0.01, "table": {"mean": 0.712345}},
                        "raw_scale100": {"mode": "raw", "intensity": 1.0, "table": {"mean": 0.5}}}}
    assert optimize_headline("microscopy", opt) == {"mic": {"learned": {"s001": 0.7123}, "raw": {"s100": 0.5}}}
    assert rounded(None) is None and rounded(3) == 3 and rounded(2.0 / 3) == 0.6667
