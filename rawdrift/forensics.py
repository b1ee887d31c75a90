"""Drift forensics (paper section 5.2, equation 9): adversarial search over the data model.

With a task model frozen, the parameters of a constrained
:class:`~rawdrift.isp.ParametrizedISP` (all groups, or one group alone) are moved to

    minimise  lambda * D(V, V~) - L(V~, Y)

where ``V`` are the views of the initial parameters (view ``bi_s_ga``, equation 6), ``V~``
those of the searched parameters and ``L`` the task model's own training loss. ``D`` is the
l2 regulariser, the mean squared difference per pixel and channel (equation 9's squared norm
divided by the number of entries, so that lambda does not depend on the tile size or the
batch), or ``1 - SSIM``. The search runs on a fold's training tiles and is evaluated on its
held-out tiles: metric, l2 distance and parameter deviation from the start.

The *forensic signature* (section 5.2.3) condenses a sweep over lambda into what a model's
user needs: per parameter group, how far the processing may move before the metric leaves a
tolerance band around its clean value, and which change hurts most.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from rawdrift import checks
from rawdrift.camera import Camera
from rawdrift.errors import RawdriftError
from rawdrift.kernels import gaussian_1d
from rawdrift.isp.constraints import constrain, optimiser_groups
from rawdrift.isp.differentiable import PARAMETER_GROUPS, ParametrizedISP, compiled_process, process
from rawdrift.tasks import METRIC, TaskConfig, in_batches, loss_fn, predict, score
from rawdrift.runtime import COMPILE_MODES
from rawdrift.training import compiled

#: What can be searched: every group together, or one group alone.
SEARCHES: tuple[str, ...] = ("all",) + PARAMETER_GROUPS
REGULARISERS: tuple[str, ...] = ("l2", "ssim")

#: SSIM window (Wang et al. 2004; scikit-image ``gaussian_weights=True``): sigma 1.5, 11 taps.
SSIM_SIGMA: float = 1.5
SSIM_RADIUS: int = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class SearchSettings:
    """One adversarial search (``forensics.*`` in params.yaml).

    Attributes:
        lam: regularisation weight lambda >= 0.
        group: ``"all"`` or one of :data:`~rawdrift.isp.differentiable.PARAMETER_GROUPS`.
        epochs: passes over the search tiles.
        lr: Adam step size on the unconstrained parameters (their units: raw scale for the
            black level, gain for white balance, kernel weight, colour-matrix entry, log gamma).
        batch_size: tiles per Adam step.
        regulariser: ``"l2"`` or ``"ssim"``.
    """

    lam: float
    group: str = "all"
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 16
    regulariser: str = "l2"

    def __post_init__(self) -> None:
        if not (isinstance(self.lam, (int, float)) and np.isfinite(self.lam) and self.lam >= 0):
            raise RawdriftError(f"forensics.lambda must be a number >= 0, got {self.lam!r}")
        if self.group not in SEARCHES:
            raise RawdriftError(f"forensics.parameters: unknown group {self.group!r}; expected some of {', '.join(SEARCHES)}")
        if self.regulariser not in REGULARISERS:
            raise RawdriftError(f"forensics.regulariser must be l2 or ssim, got {self.regulariser!r}")


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per entry of two (B, 3, H, W) batches (a 0-dim tensor)."""
    return (a - b).square().mean()


def _ssim_window(dtype: torch.dtype, device) -> torch.Tensor:
    return gaussian_1d(SSIM_SIGMA, SSIM_RADIUS, torch).to(dtype=dtype, device=device)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) batches, differentiable.

    Gaussian window sigma 1.5 (11 taps), population covariances, K1 = 0.01, K2 = 0.03, the
    mean taken over the pixels at least 5 from the border and over channels: scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)`` per image and channel. Needs H, W >= 11.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise RawdriftError(f"ssim: expected two equal (B, C, H, W) shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise RawdriftError(f"ssim: images must be at least {2 * SSIM_RADIUS + 1} px, got {tuple(a.shape[-2:])}")
    c = a.shape[1]
    g = _ssim_window(a.dtype, a.device)
    wy = g.reshape(1, 1, -1, 1).repeat(5 * c, 1, 1, 1)
    wx = g.reshape(1, 1, 1, -1).repeat(5 * c, 1, 1, 1)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    m = F.conv2d(F.conv2d(stack, wy, groups=5 * c), wx, groups=5 * c)
    mu_a, mu_b, aa, bb, ab = m.split(c, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def regularise(kind: str, searched: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Equation 9's distance term: l2 (mean squared difference) or 1 - SSIM."""
    if kind == "l2":
        return l2_distance(searched, reference)
    return 1.0 - ssim(searched, reference)


def search_seed(seed: int, group: str, lam: float, fold: int) -> int:
    """A seed for the tile order of one search, stable across runs and Python versions."""
    key = f"{seed}/{group}/{lam!r}/{fold}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def adversarial_search(model: nn.Module, cfg: TaskConfig, camera: Camera, raw: torch.Tensor, target: torch.Tensor,
                       settings: SearchSettings, seed: int = 0, amp: bool = False,
                       compile_mode: str = "none") -> ParametrizedISP:
    """Search the ISP parameters that hurt a frozen ``model`` most under the regulariser (eq. 9).

    Args:
        model: task model taking views in [0, 1]; frozen here (eval mode, no weight gradients).
        cfg: its TaskConfig (selects the loss: cross-entropy, Dice, Dice + BCE).
        camera: initial black level, white balance, colour matrix (view bi_s_ga at the start).
        raw: (N, H, W) float raw tiles in [0, 1] on the model's device (the search set).
        target: (N,) labels or (N, H, W) masks on the same device.
        settings: lambda, group, epochs, lr, batch size, regulariser.
        seed: tile-order seed (one Adam step per ``batch_size`` tiles, reshuffled per epoch).
        amp: bf16 autocast for the task model (the ISP always runs in float32).
        compile_mode: the ``compile`` param: ``none`` runs the search step eager; otherwise the
            frozen model's pass (forward and the backward to its input) runs through
            :func:`rawdrift.training.compiled` in this mode (``reduce-overhead``: CUDA graphs on
            a GPU) and the ISP through :func:`~rawdrift.isp.differentiable.compiled_process`
            (fused kernels). Not the eager bytes: Adam amplifies rounding where a gradient is
            near zero, so a compiled search ends up to a third of a parameter's movement from
            the eager one, a little farther than eager searches on tiles one float32 ulp apart
            end from each other (a quarter); the distance and task loss forensics reports of
            them agree within about 1 % (tests/test_forensics.py).

    Returns:
        the searched, constrained ISP (``to_dict()`` gives its parameters).
    """
    return adversarial_searches(model, cfg, camera, raw, target, [settings], [seed], amp, compile_mode)[0]


def adversarial_searches(model: nn.Module, cfg: TaskConfig, camera: Camera, raw: torch.Tensor,
                         target: torch.Tensor, settings: list[SearchSettings], seeds: list[int],
                         amp: bool = False, compile_mode: str = "none") -> list[ParametrizedISP]:
    """Several independent searches stepped together: one task-model pass per step for all of them.

    Each search has its own ISP, tile order (its seed), lambda, group and loss; their objectives
    are summed, which leaves each search's gradient its own (the model is in eval mode, so
    samples do not interact; Adam is elementwise). A model pass over ``len(settings) x
    batch_size`` tiles is several times faster on a CPU than as many small passes. Every search
    must share ``epochs``, ``batch_size``, ``lr`` and ``regulariser``; see :func:`adversarial_search`.
    ``raw`` is checked once (the reference views); the searches' steps run the functional ISP.
    """
    first = settings[0]
    if any((s.epochs, s.batch_size, s.lr, s.regulariser) != (first.epochs, first.batch_size, first.lr,
                                                               first.regulariser) for s in settings):
        raise RawdriftError("searches stepped together must share epochs, batch_size, lr and regulariser")
    device = raw.device
    net = _freeze(compiled(model, compile_mode))       # the mode checked before the model is touched
    isp_process = process if compile_mode == "none" else compiled_process()
    reference = ParametrizedISP(camera).to(device)
    with torch.no_grad():
        v_ref_all = reference(raw)
    raw = raw.to(reference.gamma.dtype)
    isps, groups = [], []
    for s in settings:
        isp = constrain(ParametrizedISP(camera)).to(device)
        groups += optimiser_groups(isp, s.group, first.lr)
        isps.append(isp)
    opt = torch.optim.Adam(groups, lr=first.lr)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    n = raw.shape[0]
    bs = min(first.batch_size, n)
    for _ in range(first.epochs):
        orders = [torch.randperm(n, generator=g).to(device) for g in gens]
        for i in range(0, n - bs + 1, bs):     # full batches only: every step weighs the same
            idx = [order[i:i + bs] for order in orders]
            with parametrize.cached():
                views = [isp_process(raw[ix], *isp.group_values()) for isp, ix in zip(isps, idx)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(torch.cat(views).contiguous(memory_format=torch.channels_last))
            objective = 0.0
            for k, (s, v, ix) in enumerate(zip(settings, views, idx)):
                task_loss = loss_fn(cfg, logits[k * bs:(k + 1) * bs], target[ix])
                objective = objective + s.lam * regularise(s.regulariser, v, v_ref_all[ix]) - task_loss
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
    return isps


@torch.no_grad()
def evaluate_isp(model: nn.Module, task: str, isp: ParametrizedISP, reference: torch.Tensor, raw: torch.Tensor,
                 target: torch.Tensor, batch_size: int = 64, amp: bool = False) -> dict:
    """Metric of ``model`` on ``raw`` processed by ``isp``, and the distances to ``reference``.

    Args:
        reference: (N, 3, H, W) the same tiles through the initial ISP (view bi_s_ga).

    Returns:
        {"metric", "l2" (mean squared difference per entry), "ssim"}.
    """
    views = in_batches(isp, raw, batch_size)
    pred = predict(model, views.contiguous(memory_format=torch.channels_last), batch_size, amp)
    return {"metric": score(task, pred, target), "l2": float(l2_distance(views, reference)),
            "ssim": float(ssim(views, reference)) if min(raw.shape[-2:]) >= 2 * SSIM_RADIUS + 1 else float("nan")}


def _norm(a: np.ndarray) -> float:
    """Euclidean norm with a correctly rounded sum: the same last bit on every run
    (``np.linalg.norm``'s BLAS sum order varies with memory alignment)."""
    return math.sqrt(math.fsum(float(v) * float(v) for v in np.ravel(a)))


def parameter_change(initial: dict, searched: dict) -> dict:
    """Per group: l2 norm of the change, relative to the initial norm, and the mean signed change.

    The black level is relative to the full scale (a black level of 1 at every site) rather
    than to its initial value, which is about 0 for some cameras (Raw-Microscopy: 1e-5).
    """
    out = {}
    for g in PARAMETER_GROUPS:
        a, b = np.asarray(initial[g], dtype=np.float64), np.asarray(searched[g], dtype=np.float64)
        d = b - a
        ref = np.sqrt(a.size) if g == "black_level" else max(_norm(a), 1e-12)
        out[g] = {"l2": _norm(d), "relative": _norm(d) / ref, "mean": float(d.mean())}
    return out


@torch.no_grad()
def l2_by_group(camera: Camera, searched: dict, raw: torch.Tensor, reference: torch.Tensor,
                batch_size: int = 64) -> dict:
    """Which group of a joint search changed the views most: for each group, the l2 distance to
    ``reference`` when only that group takes its searched value (the others stay initial)."""
    initial = ParametrizedISP(camera).to_dict()
    out = {}
    for g in PARAMETER_GROUPS:
        isp = ParametrizedISP(camera).to(raw.device).load_dict({**initial, g: searched[g]})
        views = in_batches(isp, raw, batch_size)
        out[g] = float(l2_distance(views, reference))
    return out


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "per_fold": a.tolist()}


def lambda_key(lam: float) -> str:
    """The JSON key of one lambda (``1e-03``), sortable by value after parsing."""
    return f"{lam:.0e}" if lam > 0 and float(f"{lam:.0e}") == lam else repr(float(lam))


def forensics_sweep(load_model, cfg: TaskConfig, camera: Camera, raw: torch.Tensor, target: torch.Tensor,
                    folds: np.ndarray, lambdas, groups, settings: SearchSettings, search_tiles: int = 0,
                    seed: int = 0, amp: bool = False, progress: bool = True, max_batch: int = 64,
                    compile_mode: str = "none") -> dict:
    """Every (group, lambda, fold) search, evaluated on the fold's held-out tiles.

    Args:
        load_model: ``fold -> frozen task model`` (trained on view bi_s_ga) on ``raw``'s device.
        raw: (N, H, W) all raw tiles in [0, 1] at the reference intensity, on the device.
        target: (N,) labels or (N, H, W) masks on the device.
        folds: (N,) test-fold index per tile.
        lambdas, groups: the sweep (each group searched alone, ``"all"`` together).
        settings: epochs, lr, batch size, regulariser (its lam and group are replaced).
        search_tiles: training tiles per fold used for the search (a seeded subset, the same for
            every search of the fold); 0 = all of them.
        max_batch: tiles per task-model pass: ``max_batch // batch_size`` searches are stepped
            together (:func:`adversarial_searches`). The same searches in exact arithmetic, but
            not the same floats: a convolution sums in another order at another batch size
            (ResNet18 logits differ by about 4e-7), and Adam's normalised steps amplify such
            differences where a gradient is near zero, so the results depend on it.
        compile_mode: the search steps eager or compiled (:func:`adversarial_search`); the
            evaluations run eager.

    Returns:
        the ``metrics/forensics/<dataset>.json`` dict: metric, lambdas, groups, settings, clean
        (per fold), initial parameters and ``results[group][lambda_key]`` with metric, l2, ssim
        (mean, std, per_fold), parameter change per fold and the searched parameters per fold.
    """
    checks.choice("compile_mode", compile_mode, COMPILE_MODES)
    lambdas = sorted({float(x) for x in lambdas}, reverse=True)
    groups = list(groups)
    for g in groups:
        SearchSettings(lam=0.0, group=g)
    device = raw.device
    k_folds = int(folds.max()) + 1
    initial = ParametrizedISP(camera).to_dict()
    reference = ParametrizedISP(camera).to(device)
    clean = []
    runs: dict = {g: {lambda_key(lam): [] for lam in lambdas} for g in groups}
    bar = tqdm(total=k_folds * len(groups) * len(lambdas), desc="forensics", unit="search",
               disable=None if progress else True, leave=False)
    for k in range(k_folds):
        model = _freeze(load_model(k))
        train_idx = np.flatnonzero(folds != k)
        if 0 < search_tiles < train_idx.size:
            rng = np.random.default_rng(search_seed(seed, "tiles", 0.0, k))
            train_idx = np.sort(rng.choice(train_idx, search_tiles, replace=False))
        test_idx = torch.from_numpy(np.flatnonzero(folds == k)).to(device)
        tr = torch.from_numpy(train_idx).to(device)
        with torch.no_grad():
            ref_test = in_batches(reference, raw[test_idx])
        clean.append(evaluate_isp(model, cfg.task, reference, ref_test, raw[test_idx], target[test_idx], amp=amp)["metric"])
        pairs = [(g, lam) for g in groups for lam in lambdas]
        per_step = max(1, max_batch // max(1, min(settings.batch_size, tr.numel())))
        for c in range(0, len(pairs), per_step):
            chunk = pairs[c:c + per_step]
            searched = adversarial_searches(
                model, cfg, camera, raw[tr], target[tr],
                [SearchSettings(lam=lam, group=g, epochs=settings.epochs, lr=settings.lr,
                                batch_size=settings.batch_size, regulariser=settings.regulariser) for g, lam in chunk],
                [search_seed(seed, g, lam, k) for g, lam in chunk], amp, compile_mode)
            for (g, lam), isp in zip(chunk, searched):
                ev = evaluate_isp(model, cfg.task, isp, ref_test, raw[test_idx], target[test_idx], amp=amp)
                params = isp.to_dict()
                record = {**ev, "parameters": params, "change": parameter_change(initial, params)}
                if g == "all":
                    record["l2_by_group"] = l2_by_group(camera, params, raw[test_idx], ref_test)
                runs[g][lambda_key(lam)].append(record)
                bar.update()
    bar.close()
    results = {}
    for g in groups:
        results[g] = {}
        for key, per_fold in runs[g].items():
            results[g][key] = {
                "metric": _stats([r["metric"] for r in per_fold]),
                "l2": _stats([r["l2"] for r in per_fold]),
                "ssim": _stats([r["ssim"] for r in per_fold]),
                "change": [r["change"] for r in per_fold],
                **({"l2_by_group": [r["l2_by_group"] for r in per_fold]} if g == "all" else {}),
                "parameters": [r["parameters"] for r in per_fold],
            }
    return {"metric": METRIC[cfg.task], "folds": k_folds, "lambdas": lambdas, "groups": groups,
            "settings": {"epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size,
                         "regulariser": settings.regulariser, "search_tiles": search_tiles, "max_batch": max_batch},
            "clean": _stats(clean), "initial": initial, "results": results}


_CHANNELS = ("R", "G", "B")


def describe_change(group: str, initial, searched) -> str:
    """One line saying how a group moved, in the group's own terms (e.g. "black level up by 0.021")."""
    a, b = np.asarray(initial, dtype=np.float64), np.asarray(searched, dtype=np.float64)
    d = b - a
    if group == "black_level":
        m = float(d.mean())
        return f"black level {'up' if m >= 0 else 'down'} by {abs(m):.3g} of full scale ({a.mean():.3g} -> {b.mean():.3g})"
    if group == "gamma":
        return f"gamma {'up' if d[0] >= 0 else 'down'} by {abs(d[0]):.3g} ({a[0]:.3g} -> {b[0]:.3g})"
    if group == "white_balance":
        ratio = b / np.where(a == 0, 1e-12, a)
        c = int(np.argmax(np.abs(np.log(np.clip(np.abs(ratio), 1e-12, None)))))
        return f"white balance: {_CHANNELS[c]} gain x{ratio[c]:.3g} ({a[c]:.3g} -> {b[c]:.3g})"
    if group == "colour_matrix":
        r, c = np.unravel_index(int(np.argmax(np.abs(d))), d.shape)
        return (f"colour matrix: {_CHANNELS[r]} output from {_CHANNELS[c]} input {'+' if d[r, c] >= 0 else '-'}"
                f"{abs(d[r, c]):.3g} ({a[r, c]:.3g} -> {b[r, c]:.3g}; row sums fixed)")
    if group == "demosaic":
        centre = d[:, 1, 1]
        c = int(np.argmax(np.abs(centre)))
        return (f"demosaic: {_CHANNELS[c]} kernel centre {a[c, 1, 1]:.3g} -> {b[c, 1, 1]:.3g} "
                f"(largest tap change {np.abs(d).max():.3g}; kernel sums fixed)")
    h = a.shape[0] // 2
    centre = d[h, h]
    if group == "denoising":
        effect = "less smoothing" if centre > 0 else "more smoothing"
    else:
        effect = "stronger sharpening" if centre > 0 else "weaker sharpening"
    return f"{group}: centre tap {a[h, h]:.3g} -> {b[h, h]:.3g} ({effect}; kernel sum fixed)"


def _searched_deviation(entry: dict, group: str) -> float:
    """Relative parameter change of the searched group(s), mean over folds (the largest group for "all")."""
    groups = PARAMETER_GROUPS if group == "all" else (group,)
    return float(np.mean([max(ch[g]["relative"] for g in groups) for ch in entry["change"]]))


def forensic_signature(result: dict, tolerance: float) -> dict:
    """The forensic signature of a :func:`forensics_sweep` result (paper section 5.2.3).

    Per searched group:

    - ``safe_l2`` / ``safe_parameter_change``: the largest l2 distance (and relative parameter
      change, max over a joint search's groups) such that every search with a smaller one kept
      the mean metric within ``tolerance`` of clean; 0 when even the mildest search fell out.
    - ``fails_at``: the mildest search (largest lambda) that fell out of the band, or None.
    - ``strongest``: lambda, metric (mean, std), l2 at the smallest lambda.
    - ``most_harmful_change``: how the parameters moved at the strongest search, in the fold
      where the metric fell furthest (folds can move a parameter in opposite directions, so a
      mean over folds could describe a change no search made); for ``all``, the group whose
      change alone moves the views most in that fold (``l2_by_group``).
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise RawdriftError(f"forensics.tolerance must be a number >= 0, got {tolerance!r}")
    clean = result["clean"]["mean"]
    floor = clean - tolerance
    out = {"metric": result["metric"], "clean": clean, "clean_std": result["clean"]["std"], "tolerance": tolerance,
           "groups": {}}
    for g in result["groups"]:
        rows = sorted(((float(k), v) for k, v in result["results"][g].items()), key=lambda r: -r[0])
        inside = [r for r in rows if r[1]["metric"]["mean"] >= floor]
        failing = [r for r in rows if r[1]["metric"]["mean"] < floor]

        def safe(measure):
            bound = min((measure(v) for _, v in failing), default=np.inf)
            ok = [measure(v) for _, v in inside if measure(v) < bound]
            return float(max(ok)) if ok else 0.0

        lam_s, strongest = rows[-1]
        worst = int(np.argmin(strongest["metric"]["per_fold"]))     # folds may move in opposite directions
        params = strongest["parameters"][worst]
        if g == "all":
            by_group = strongest["l2_by_group"][worst]
            lead = max(by_group, key=by_group.get)
            harmful = f"{describe_change(lead, result['initial'][lead], params[lead])} (alone: l2 {by_group[lead]:.3g})"
        else:
            harmful = describe_change(g, result["initial"][g], params[g])
        harmful += f"; fold {worst}, {result['metric']} {strongest['metric']['per_fold'][worst]:.3f}"
        out["groups"][g] = {
            "safe_l2": safe(lambda v: v["l2"]["mean"]),
            "safe_parameter_change": safe(lambda v: _searched_deviation(v, g)),
            "fails_at": ({"lambda": failing[0][0], "metric": failing[0][1]["metric"]["mean"],
                          "l2": failing[0][1]["l2"]["mean"]} if failing else None),
            "strongest": {"lambda": lam_s, "metric": strongest["metric"]["mean"], "metric_std": strongest["metric"]["std"],
                          "l2": strongest["l2"]["mean"], "parameter_change": _searched_deviation(strongest, g)},
            "most_harmful_change": harmful,
        }
    return out


def signature_markdown(signature: dict, dataset: str) -> str:
    """The forensic signature as a Markdown table a model's user can read (README, hand-over)."""
    m, tol = signature["metric"], signature["tolerance"]
    lines = [f"Forensic signature, {dataset}: task model trained on view bi_s_ga; clean held-out {m} "
             f"{signature['clean']:.3f} ± {signature['clean_std']:.3f}; tolerance {tol:g}.",
             "",
             f"| parameters | safe l2 | safe parameter change | fails at (lambda, l2, {m}) | {m} at strongest search "
             "(lambda) | most harmful change |",
             "|---|---|---|---|---|---|"]
    for g, s in signature["groups"].items():
        f = s["fails_at"]
        fails = f"{f['lambda']:g}, {f['l2']:.2g}, {f['metric']:.3f}" if f else "never"
        st = s["strongest"]
        lines.append(f"| {g.replace('_', ' ')} | {s['safe_l2']:.2g} | {100 * s['safe_parameter_change']:.3g} % | {fails} | "
                     f"{st['metric']:.3f} ± {st['metric_std']:.3f} ({st['lambda']:g}) | {s['most_harmful_change']} |")
    lines += ["", "safe l2 / parameter change: the largest l2 distance to the clean views (mean squared difference "
              "per pixel and channel) and relative parameter change (norm of the change over the initial norm; the "
              "black level over the full scale; for all, the largest group) for which every search with a smaller "
              f"one kept the mean {m} over folds within {tol:g} of clean. Most harmful change: at the strongest "
              "search, in the fold that lost most."]
    return "\n".join(lines) + "\n"
