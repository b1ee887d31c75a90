"""Cross-evaluation (rawdrift.crosseval): every view's fold models on every view, its schema and
headline; and the corruption evaluation (rawdrift.corruptions.corruption_eval), whose identity
column is the cross-evaluation's diagonal."""

import numpy as np
import pytest
import torch

from helpers import colour_task
from rawdrift.corruptions import corruption_eval, corruption_headline
from rawdrift.crosseval import crosseval, headline
from rawdrift.errors import RawdriftError
from rawdrift.models import save_fold_models
from rawdrift.sources.store import view_to_uint16
from rawdrift.tasks import task_config
from rawdrift.training import train_folds


@pytest.fixture(scope="module")
def three_view_models(tmp_path_factory):
    """Tiny fold models for three views of a colour task: (root, labels, folds, views)."""
    from rawdrift.isp import VIEWS
    root = tmp_path_factory.mktemp("crosseval")
    x, y, folds = colour_task(n=12)
    views = VIEWS[:3]
    cfg = task_config("microscopy", dict(epochs=1, batch_size=4, classes=3))
    (root / "views").mkdir()
    for i, v in enumerate(views):
        xv = (x + 0.05 * i).clamp(0, 1)
        np.save(root / "views" / f"{v}.npy", view_to_uint16(xv.numpy()))
        res = train_folds(cfg, xv, y, folds, seed=i, device=torch.device("cpu"), progress=False)
        save_fold_models(root / "models" / v, cfg, [r.model for r in res], info={"view": v})
    return root, y, folds, views


def test_crosseval_schema_and_headline(three_view_models):
    root, y, folds, views = three_view_models
    out = crosseval(root / "models", root / "views", y, folds, "classification", torch.device("cpu"),
                    views=views, progress=False)
    assert set(out) == {"metric", "views", "folds", "mean", "std", "per_fold"}
    per_fold = np.asarray(out["per_fold"])
    assert per_fold.shape == (2, 3, 3) and out["folds"] == 2 and out["metric"] == "accuracy"
    np.testing.assert_allclose(out["mean"], per_fold.mean(0))
    np.testing.assert_allclose(out["std"], per_fold.std(0, ddof=1))
    head = headline(out)
    mean = per_fold.mean(0)
    assert head["diagonal_mean"] == pytest.approx(np.diag(mean).mean())
    assert head["drop"] == pytest.approx(np.diag(mean).mean() - mean[~np.eye(3, dtype=bool)].mean())
    assert [r["view"] for r in head["train_view_ranking"]][0] == views[int(np.argmax(mean.mean(1)))]


def test_corruption_eval_schema_identity_and_headline(three_view_models):
    root, y, folds, views = three_view_models
    cpu = torch.device("cpu")
    cross = crosseval(root / "models", root / "views", y, folds, "classification", cpu, views=views, progress=False)
    names = ["gaussian_noise", "contrast"]
    out = corruption_eval(root / "models", root / "views", y, folds, "classification", cpu, names, (1, 5),
                          seed=3, scale=0.5, views=views, progress=False)
    again = corruption_eval(root / "models", root / "views", y, folds, "classification", cpu, names, (1, 5),
                            seed=3, scale=0.5, views=views, progress=False)
    assert out == again                                          # seeded noise: reproducible
    assert out["columns"] == ["identity", *names] and out["severities"] == [1, 5]
    for s in ("1", "5"):
        per_fold = np.asarray(out["severity"][s]["per_fold"])
        assert per_fold.shape == (2, 3, 3)
        np.testing.assert_allclose(out["severity"][s]["mean"], per_fold.mean(0))
        np.testing.assert_allclose(out["severity"][s]["std"], per_fold.std(0, ddof=1))
        # identity column = the crosseval diagonal, fold by fold
        np.testing.assert_array_equal(per_fold[:, :, 0], np.diagonal(np.asarray(cross["per_fold"]), axis1=1, axis2=2))
    # colour classes: contrast 0.05 (severity 5) destroys them, severity 1 (0.4) much less
    m1, m5 = np.asarray(out["severity"]["1"]["mean"]), np.asarray(out["severity"]["5"]["mean"])
    assert m5[:, 2].mean() < m1[:, 2].mean()
    head = corruption_headline(out, cross, 5)
    assert head["corruption_drop"] == pytest.approx(m5[:, 0].mean() - m5[:, 1:].mean())
    cm = np.asarray(cross["mean"])
    view_drop = np.diag(cm).mean() - cm[~np.eye(3, dtype=bool)].mean()
    assert head["view_drop"] == pytest.approx(view_drop)
    assert head["ratio"] == (pytest.approx(head["corruption_drop"] / view_drop) if view_drop > 0 else None)
    assert set(head["top_overlap"]) == set(head["top3_isp"]) & set(head["top3_corruptions"])
    best = head["best_train_view_per_column"]
    assert set(best) == {"identity", *names}
    for j, c in enumerate(out["columns"]):
        col = m5[:, j]
        assert best[c] == ([] if np.ptp(col) == 0 else [views[i] for i in np.flatnonzero(col == col.max())])
    with pytest.raises(RawdriftError, match="severity 3 not evaluated"):
        corruption_headline(out, cross, 3)
