"""The k-fold training loop (rawdrift.training): augmentation, learning and determinism, batch-norm
recalibration, concurrent folds, the evaluation schedule, fronts. The task models, saved models
and the cross-evaluation they feed: test_tasks.py, test_models.py, test_crosseval.py."""

import numpy as np
import pytest
import torch

from helpers import SEG, colour_task, square_task
from rawdrift.errors import RawdriftError
from rawdrift.tasks import task_config
from rawdrift.training import dihedral_augment, train_folds


def test_dihedral_augment_moves_masks_with_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    y = (x[:, 0] > 0.5).to(torch.uint8)
    xa, ya = dihedral_augment(x, y, g)
    assert torch.equal(ya, (xa[:, 0] > 0.5).to(torch.uint8))
    # all 8 elements of the dihedral group occur
    seen = set()
    for i in range(64):
        for t in range(2):
            for f1 in range(2):
                for f2 in range(2):
                    z = x[i].transpose(-1, -2) if t else x[i]
                    z = z.flip(-1) if f1 else z
                    z = z.flip(-2) if f2 else z
                    if torch.equal(z, xa[i]):
                        seen.add((t, f1, f2))
    assert len(seen) == 8
    labels = torch.arange(64)
    assert torch.equal(dihedral_augment(x, labels, g)[1], labels)


# fp32 only: bf16 autocast on a CPU is neither reproducible nor always stable at this size (16-px
# tiles, 1 x 1 feature maps): about one run in three ends a fold with a NaN loss, with the old
# training loops as with the engine. The default profile (64 px) reproduced bit for bit in bf16.
def test_classification_learns_and_is_deterministic_on_cpu():
    amp = False
    x, y, folds = colour_task()
    cfg = task_config("microscopy", dict(epochs=4, batch_size=8, lr=1e-3, classes=3))
    a = train_folds(cfg, x, y, folds, seed=1, device=torch.device("cpu"), progress=False, amp=amp)
    b = train_folds(cfg, x, y, folds, seed=1, device=torch.device("cpu"), progress=False, amp=amp)
    assert len(a) == 2
    assert [r.val_metric for r in a] == [r.val_metric for r in b]
    assert [r.train_loss for r in a] == [r.train_loss for r in b]
    assert min(r.val_metric[-1] for r in a) > 0.9
    assert all(r.train_loss[-1] < r.train_loss[0] for r in a)
    # normalisation is part of the model: the training view's statistics
    mean = x[torch.from_numpy(folds != 0)].mean(dim=(0, 2, 3))
    assert torch.allclose(a[0].model.normalize.mean.flatten(), mean, atol=1e-5)


def test_segmentation_iou_rises():
    x, m, folds = square_task()
    cfg = task_config("drone", SEG)
    res = train_folds(cfg, x, m, folds, seed=0, device=torch.device("cpu"), progress=False)
    assert np.mean([r.val_metric[-1] for r in res]) > 0.5
    for r in res:
        assert r.val_metric[-1] > r.val_metric[0] + 0.2


def test_recalibrated_batchnorm_holds_the_statistics_of_the_given_tiles():
    from rawdrift.training import recalibrate_batchnorm
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(conv, bn)
    x = torch.rand(10, 3, 8, 8) * 2 + 1
    recalibrate_batchnorm(model, x, batch_size=16)
    with torch.no_grad():
        feats = conv(x)
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, feats.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)
    assert bn.momentum == 0.1 and bn.num_batches_tracked == 1


def test_folds_trained_concurrently_equal_folds_trained_in_lockstep():
    """One process per fold (what keeps a GPU busy at small batch) changes nothing any fold sees."""
    from rawdrift.training import train_folds_concurrently
    x, y, folds = colour_task()
    folds = np.arange(len(folds)) % 3
    cfg = task_config("microscopy", dict(epochs=2, batch_size=8, lr=1e-3, classes=3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # the same intra-op threads as each worker: identical float sums
    try:
        a = train_folds(cfg, x, y, folds, seed=4, device=torch.device("cpu"), progress=False, amp=False)
    finally:
        torch.set_num_threads(threads)
    b = train_folds_concurrently(cfg, x, y, folds, seed=4, device=torch.device("cpu"), amp=False, threads=1)
    assert [r.val_metric for r in a] == [r.val_metric for r in b]
    assert [r.train_loss for r in a] == [r.train_loss for r in b]
    for ra, rb in zip(a, b):
        for (n, ta), tb in zip(ra.model.state_dict().items(), rb.model.state_dict().values()):
            assert torch.equal(ta, tb), n


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[n], sb[n]) for n in sa)


def test_evaluation_schedule_sets_the_curve_steps_and_leaves_training_alone():
    """10 training tiles per fold at batch 3: batches of 3, 3, 3 and a skipped single tile, so 3
    steps per epoch; 3 epochs. Evaluating more or less often changes no weight."""
    from rawdrift.training import train_setting
    x, y, folds = colour_task(n=15)
    folds = np.arange(15) % 3
    cfg = task_config("microscopy", dict(epochs=3, batch_size=3, lr=1e-3, classes=3))
    run = {ev: train_setting(cfg, x, y, folds, seed=2, device=torch.device("cpu"), eval_every=ev, progress=False)
           for ev in (None, 1, 3, 4)}
    assert [r.steps for r in run[None]] == [[3, 6, 9]] * 3
    assert [r.steps for r in run[3]] == [[3, 6, 9]] * 3
    assert [r.steps for r in run[4]] == [[4, 8, 9]] * 3            # the last step is always evaluated
    assert [r.steps for r in run[1]] == [list(range(1, 10))] * 3
    assert [r.fold for r in run[None]] == [0, 1, 2]
    for k in range(3):
        epoch_end, every_step = run[None][k], run[1][k]
        # every epoch = every 3 steps here, value for value
        assert run[3][k].val_metric == epoch_end.val_metric and run[3][k].train_loss == epoch_end.train_loss
        assert every_step.val_metric[2::3] == epoch_end.val_metric
        # per-step losses (3 tiles each) average to the epoch's mean loss per tile
        np.testing.assert_allclose(np.mean(np.reshape(every_step.train_loss, (3, 3)), axis=1), epoch_end.train_loss,
                                   rtol=1e-6)
        for ev in (1, 3, 4):
            assert run[ev][k].val_metric[-1] == epoch_end.val_metric[-1]
            assert _states_equal(run[ev][k].model, epoch_end.model)


def test_a_fixed_front_trains_exactly_as_the_same_views_given_directly():
    """The engine with a fixed front (an identity module, applied once like the frozen ISP or the
    packed raw mosaic) gives train_folds' curves and weights."""
    from rawdrift.training import Front, train_setting
    x, y, folds = colour_task(n=24)
    folds = np.arange(24) % 3
    cfg = task_config("microscopy", dict(epochs=2, batch_size=5, lr=1e-3, classes=3, schedule="cosine"))
    direct = train_folds(cfg, x, y, folds, seed=6, device=torch.device("cpu"), progress=False, amp=False)
    front = train_setting(cfg, x, y, folds, seed=6, device=torch.device("cpu"), front=Front(build=torch.nn.Identity),
                          progress=False)
    for a, b in zip(direct, front):
        assert a.val_metric == b.val_metric and a.train_loss == b.train_loss and a.steps == b.steps == [3, 6]
        assert _states_equal(a.model, b.model)
        assert b.front is None                  # no record asked for


def test_segmentation_through_an_upsampling_front_predicts_full_resolution():
    """A front at half resolution (upsample 2): logits are brought back to the mask's side."""
    from rawdrift.training import Front, train_setting
    x, m, folds = square_task(n=8)
    cfg = task_config("drone", dict(SEG, epochs=1, batch_size=4))
    res = train_setting(cfg, x, m, folds, seed=0, device=torch.device("cpu"), front=Front(build=_half, upsample=2),
                        progress=False)
    assert [r.steps for r in res] == [[1]] * 2 and all(0 <= r.val_metric[0] <= 1 for r in res)
    with pytest.raises(RawdriftError, match="eval_every must be >= 1"):
        train_setting(cfg, x, m, folds, seed=0, device=torch.device("cpu"), eval_every=0, progress=False)
    with pytest.raises(RawdriftError, match="square"):
        train_setting(cfg, x[..., :16], m, folds, seed=0, device=torch.device("cpu"), progress=False)


def _half() -> torch.nn.Module:
    return torch.nn.AvgPool2d(2)


def test_compiled_training_step_matches_eager_and_trains_as_well():
    """``compile_mode``: the compiled module's loss and gradients equal the eager module's on one
    batch within float tolerance (inductor fuses and rounds differently), and a whole run through
    the compiled step learns as the eager one does. An unknown mode is refused up front."""
    from rawdrift.tasks import TaskModel, loss_fn
    from rawdrift.training import compiled
    x, y, folds = colour_task()
    cfg = task_config("microscopy", dict(epochs=2, batch_size=8, lr=1e-3, classes=3))
    torch.manual_seed(0)
    net = TaskModel(cfg).train()
    grads = []
    for model in (net, compiled(net, "default")):
        net.zero_grad(set_to_none=True)
        loss = loss_fn(cfg, model(x[:8]), y[:8])
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in net.parameters()]))
    (l0, g0), (l1, g1) = grads
    assert l1 == pytest.approx(l0, rel=1e-5)
    rel = [float((b - a).norm() / a.norm()) for a, b in zip(g0, g1) if a.norm() > 0]
    assert len(rel) == len(g0) and max(rel) < 1e-3, max(rel)   # per tensor, relative to its norm
    cpu = torch.device("cpu")
    eager = train_folds(cfg, x, y, folds, seed=1, device=cpu, progress=False, amp=False)
    comp = train_folds(cfg, x, y, folds, seed=1, device=cpu, progress=False, amp=False, compile_mode="default")
    assert [r.steps for r in comp] == [r.steps for r in eager]
    assert min(r.val_metric[-1] for r in comp) > 0.9
    # the first epoch's mean loss: the steps diverge only through rounding, which Adam's first,
    # sign-like steps amplify: eager runs at 1 and 2 intra-op threads (another reduction order)
    # differ by 1.3 % on fold 0 (torch 2.11 and 2.14 alike), compiled and eager by 0.2-1.5 %
    assert [r.train_loss[0] for r in comp] == pytest.approx([r.train_loss[0] for r in eager], rel=0.03)
    with pytest.raises(RawdriftError, match="compile_mode: must be one of none, default, reduce-overhead, got 'max'"):
        train_folds(cfg, x, y, folds, seed=1, device=cpu, progress=False, compile_mode="max")


def test_epoch_schedule_evaluates_every_nth_and_the_last_epoch_and_leaves_training_alone():
    """``eval_epochs``: evaluations after epochs 2 and 3 of 3 (every 2nd and the last), each
    the every-epoch run's value at that epoch; the loss since the previous evaluation is the
    mean of those epochs'; the weights are the same."""
    from rawdrift.training import evaluated_epochs, train_setting
    assert evaluated_epochs(5, 2) == [1, 3, 4] and evaluated_epochs(3, 1) == [0, 1, 2] and evaluated_epochs(3, 9) == [2]
    x, y, folds = colour_task(n=15)
    folds = np.arange(15) % 3
    cfg = task_config("microscopy", dict(epochs=3, batch_size=3, lr=1e-3, classes=3))
    every, second = (train_setting(cfg, x, y, folds, seed=2, device=torch.device("cpu"), progress=False, eval_epochs=n)
                     for n in (1, 2))
    for a, b in zip(every, second):
        assert b.steps == [6, 9] and a.steps == [3, 6, 9]          # 3 steps per epoch
        assert b.val_metric == a.val_metric[1:]
        np.testing.assert_allclose(b.train_loss, [np.mean(a.train_loss[:2]), a.train_loss[2]], rtol=1e-6)
        assert _states_equal(a.model, b.model)
    with pytest.raises(RawdriftError, match="eval_epochs must be >= 1, got 0"):
        train_setting(cfg, x, y, folds, seed=2, device=torch.device("cpu"), progress=False, eval_epochs=0)
