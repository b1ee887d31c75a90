"""Training throughput of the task models against the model-only ceiling, on the current device.

``make bench`` (or ``python -m rawdrift.bench``) measures, in one run on one device:

- ceiling: the bare network on random device tensors (no data pipeline, no augmentation);
  channels_last, bf16 autocast as ``--precision`` resolves it (auto: where native);
- pipeline: the same network through ``rawdrift.training``'s hot loop (index gather from the
  device-resident view tensor, dihedral augmentation on the device, Normalize, loss, Adam);
- assembled: the pipeline's model on one batch that gather and augmentation assembled once,
  stepped again and again (pipeline vs assembled: what assembling each batch costs;
  assembled vs ceiling: what Normalize and the augmented batch's memory layout cost);

- concurrent: the pipeline with the folds of a stage in one process each on the same device
  (``RAWDRIFT_CONCURRENT_FOLDS=1``), eager, images/s of all of them together, against the bare
  network at the batch they add up to (what one busy device can do): the other remedy for a
  launch-bound step than the CUDA graphs of ``compile: reduce-overhead``;
- inference (the held-out evaluations), the joint data-model + task-model step (optimize)
  and forensics' search step (:func:`bench_search`), the search also eager where the
  profile compiles it (``rates.<dataset>.search_eager``: whether compiling pays there);

the static views (batched torch on the device against the numpy reference on one core), and
the common corruptions (images/s per corruption and severity at the paper profile's tile
size, and the projected time to corrupt the held-out tiles of every train view through every
corruption and severity at that size), the FLOPs of one training image of each task model
(:func:`training_flops`) and on CUDA the bare network at growing batches
(:func:`bench_saturation`). ``--step-modes`` instead compares the training step's execution
modes (eager, fused Adam, ``torch.compile``, CUDA graphs: :func:`bench_step_modes`);
``--warm`` only compiles what a bench run compiles, into inductor's on-disk cache
(:func:`warm_compiles`), so that the next run's warm-up loads it. The paper
protocol is ``profiles/paper.yaml`` laid over ``params.yaml`` (:data:`PAPER_PROTOCOL`), as
``make repro-paper`` runs it: the training steps and the forensics searches run in its
``compile`` mode, the searches at its ``forensics.max_batch`` tiles per pass. From these rates it projects the whole
protocol (:func:`project_paper`), stage by stage, and writes ``bench/<device>.json`` with
images/s, their ratios, the projection and the device name. Timings are medians of repeated
windows after warm-up; no test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from rawdrift.corruptions import CORRUPTIONS, corrupt
from rawdrift.errors import ParamError
from rawdrift.runtime import CUBLAS_WORKSPACE, configure_backends, resolve_device, resolve_precision
from rawdrift.tasks import TaskModel, loss_fn, predict, task_config
from rawdrift.training import BN_TILES, adam, compiled, dihedral_augment, evaluated_epochs, optimisation_step

def protocol(profile: str = "paper") -> dict:
    """The counts :func:`project_paper` needs, from ``params.yaml`` with ``profiles/<profile>.yaml``
    laid over it (:func:`rawdrift.profiles.resolve`, validated), as ``make repro-paper`` runs it:
    views, folds; per dataset the tiles, tile side, train batch and epochs, optimize epochs and
    eval_every, and the task model (``train.<dataset>``); corruptions x severities; forensics
    groups x lambdas x epochs, tiles per search step and per pass (``batch_size``, ``max_batch``);
    optimize modes x intensities;
    the ``compile`` mode of the training steps and the ``deterministic`` flag; the train stage's
    ``eval_every_epochs``."""
    from rawdrift.profiles import resolve, validate
    sections = validate(resolve(profile))
    data, train, opt = sections["data"], sections["train"], sections["optimize"]
    first, first_opt = next(iter(data.values())), next(iter(opt.values()))
    fo = sections["forensics"]
    return {
        "profile": profile, "views": len(sections["views"]), "folds": first.folds, "compile": sections["compile"],
        "deterministic": sections["deterministic"],
        "eval_every_epochs": sections["train_eval_every_epochs"],
        "datasets": {d: {"tiles": data[d].count, "tile": data[d].tile, "batch": train[d].batch_size,
                         "epochs": train[d].epochs, "optimize_epochs": opt[d].epochs, "eval_every": opt[d].eval_every,
                         "task": {k: v for k, v in train[d].to_dict().items() if k not in ("task", "extra")}}
                     for d in data},
        "corruptions": len(sections["corruptions"].names), "severities": len(sections["corruptions"].severities),
        "forensics": {"groups": len(fo.groups), "lambdas": len(fo.lambdas), "epochs": fo.epochs,
                      "batch_size": fo.batch_size, "max_batch": fo.max_batch},
        "optimize": {"modes": len(first_opt.modes), "intensities": len(first_opt.intensities)},
    }


#: The paper protocol as ``make repro-paper`` runs it: ``profiles/paper.yaml`` over ``params.yaml``.
PAPER_PROTOCOL = protocol("paper")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _random_data(cfg, n: int, size: int, device: torch.device, gen: torch.Generator):
    """Random views (n, 3, size, size) channels_last and targets of ``cfg``'s task."""
    x = torch.rand(n, 3, size, size, device=device, generator=gen).contiguous(memory_format=torch.channels_last)
    if cfg.task == "segmentation":
        return x, (torch.rand(n, size, size, device=device, generator=gen) > 0.9).to(torch.uint8)
    return x, torch.randint(0, cfg.classes, (n,), device=device, generator=gen)


def _pipeline_step(model, opt, cfg, n_data: int, size: int, device: torch.device, gen: torch.Generator, amp: bool):
    """One step of rawdrift's training loop on random device-resident data: a batch of
    ``cfg.batch_size`` indices gathered, dihedral augmentation, Normalize, loss, Adam."""
    x_all, y_all = _random_data(cfg, n_data, size, device, gen)

    def step():
        idx = torch.randint(0, n_data, (cfg.batch_size,), device=device, generator=gen)
        xb, yb = dihedral_augment(x_all[idx], y_all[idx], gen)
        optimisation_step(model, opt, cfg, xb, yb, amp=amp)
    return step


def _steps_per_second(step, device: torch.device, warmup: int, windows: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(steps / (time.perf_counter() - start))
    rates.sort()
    return rates[len(rates) // 2]


def bench_task(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device, n_data: int = 512,
               warmup: int = 3, windows: int = 3, steps: int = 5, amp: bool | None = None,
               modes=("ceiling", "pipeline", "assembled"), compile_mode: str = "none") -> dict:
    """Images/s of the training step for one task model: ceiling vs rawdrift's pipeline, and the
    pipeline's model on a batch assembled once (``modes`` picks which are measured; the ratio
    needs ceiling and pipeline), all with the engine's Adam
    (:func:`rawdrift.training.adam`) and the step run as ``compile_mode`` says
    (:func:`rawdrift.training.compiled`; the first steps, which compile, are the warm-up)."""
    cfg = task_config(dataset, dict(cfg_values, batch_size=batch))
    amp = device.type == "cuda" if amp is None else amp
    gen = torch.Generator(device=device).manual_seed(0)
    results = {}
    for mode in modes:
        torch.manual_seed(0)
        model = TaskModel(cfg).to(device, memory_format=torch.channels_last).train()
        opt = adam(model.parameters(), cfg.lr, device)
        if mode == "ceiling":
            xb, yb = _random_data(cfg, batch, size, device, gen)
            net = compiled(model.net, compile_mode)

            def step():
                optimisation_step(net, opt, cfg, xb, yb, amp=amp)
        elif mode == "assembled":
            xb, yb = dihedral_augment(*_random_data(cfg, batch, size, device, gen), gen)
            net = compiled(model, compile_mode)

            def step():
                optimisation_step(net, opt, cfg, xb, yb, amp=amp)
        else:
            step = _pipeline_step(compiled(model, compile_mode), opt, cfg, n_data, size, device, gen, amp)
        results[mode] = batch * _steps_per_second(step, device, warmup, windows, steps)
    out = {"dataset": dataset, "size": size, "batch": batch, "config": cfg.to_dict(), "bf16": amp,
           "compile": compile_mode}
    out.update({f"{m}_images_per_s": r for m, r in results.items()})
    if {"ceiling", "pipeline"} <= set(results):
        out["ratio"] = results["pipeline"] / results["ceiling"]
    return out


def bench_inference(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device, n_data: int = 256,
                    windows: int = 3, steps: int = 1, amp: bool | None = None) -> float:
    """Images/s of :func:`rawdrift.tasks.predict` (eval mode, inference_mode, batches of ``batch``):
    the held-out evaluations of train, crosseval, corruptions, forensics and optimize."""
    cfg = task_config(dataset, dict(cfg_values, batch_size=batch))
    amp = device.type == "cuda" if amp is None else amp
    gen = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    model = TaskModel(cfg).to(device, memory_format=torch.channels_last)
    x, _ = _random_data(cfg, n_data, size, device, gen)
    return n_data * _steps_per_second(lambda: predict(model, x, batch, amp), device, 1, windows, steps)


def bench_joint_step(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device,
                     warmup: int = 2, windows: int = 3, steps: int = 3, amp: bool | None = None,
                     compile_mode: str = "none") -> float:
    """Images/s of one Adam step through the constrained ``ParametrizedISP`` and the task model
    together, from raw (batch, size, size) tiles: optimize's ``learned`` mode. ``compile_mode``
    runs the task model as :func:`rawdrift.training.compiled` does in the optimize stage (the
    ISP stays eager there)."""
    from rawdrift.camera import CAMERAS
    from rawdrift.isp.constraints import constrain, optimiser_groups
    from rawdrift.isp.differentiable import ParametrizedISP
    cfg = task_config(dataset, dict(cfg_values, batch_size=batch))
    amp = device.type == "cuda" if amp is None else amp
    gen = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    isp = constrain(ParametrizedISP(CAMERAS[dataset])).to(device)
    model = TaskModel(cfg).to(device, memory_format=torch.channels_last).train()
    net = compiled(model, compile_mode)
    opt = adam([{"params": list(model.parameters())}] + optimiser_groups(isp, "all", 0.01), cfg.lr, device)
    raw = torch.rand(batch, size, size, device=device, generator=gen) * 0.5 + 0.07
    _, yb = _random_data(cfg, batch, size, device, gen)

    def step():
        views = isp(raw).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(cfg, net(views), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * _steps_per_second(step, device, warmup, windows, steps)


def bench_search(dataset: str, cfg_values: dict, size: int, batch: int, searches: int, device: torch.device,
                 windows: int = 3, steps: int = 3, epochs: int = 5, amp: bool | None = None,
                 compile_mode: str = "none") -> float:
    """Images/s of forensics' search step as the stage runs it: ``searches`` searches of
    ``batch`` tiles a step, stepped together through :func:`rawdrift.forensics.adversarial_searches`
    (the frozen task model's forward and backward to its input, the constrained ISPs, Adam on
    their parameters), ``compile_mode`` as the ``compile`` param sets it there. Each timed call
    runs ``epochs`` epochs of ``steps`` steps over random raw tiles, its set-up (the reference
    views, the ISPs, one raw check) included, as the stage pays it once per call (over 20
    epochs there); a first, untimed call of one epoch compiles."""
    from rawdrift.camera import CAMERAS
    from rawdrift.forensics import SearchSettings, adversarial_searches
    cfg = task_config(dataset, dict(cfg_values))
    amp = device.type == "cuda" if amp is None else amp
    gen = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    model = TaskModel(cfg).to(device, memory_format=torch.channels_last)
    raw = torch.rand(batch * steps, size, size, device=device, generator=gen) * 0.5 + 0.07
    _, y = _random_data(cfg, batch * steps, size, device, gen)

    def search(n_epochs: int) -> None:
        settings = [SearchSettings(lam=10.0 ** -k, group="all", epochs=n_epochs, batch_size=batch)
                    for k in range(searches)]
        adversarial_searches(model, cfg, CAMERAS[dataset], raw, y, settings, list(range(searches)), amp, compile_mode)
    search(1)
    return searches * batch * steps * epochs * _steps_per_second(lambda: search(epochs), device, 0, windows, 1)


def _concurrent_worker(dataset: str, cfg_values: dict, size: int, batch: int, device: str, amp: bool,
                       threads: int, warmup: int, steps: int, n_data: int, seed: int, barrier, queue,
                       compile_mode: str = "none") -> None:
    """One fold's training loop (as :func:`bench_task`'s pipeline) in its own process; puts the
    (start, end) of its timed steps, on the machine's monotonic clock, into ``queue``."""
    try:
        if threads:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        cfg = task_config(dataset, dict(cfg_values, batch_size=batch))
        gen = torch.Generator(device=dev).manual_seed(seed)
        torch.manual_seed(seed)
        model = TaskModel(cfg).to(dev, memory_format=torch.channels_last).train()
        opt = adam(model.parameters(), cfg.lr, dev)
        step = _pipeline_step(compiled(model, compile_mode), opt, cfg, n_data, size, dev, gen, amp)
        for _ in range(warmup):
            step()
        _sync(dev)
        barrier.wait()
        start = time.monotonic()
        for _ in range(steps):
            step()
        _sync(dev)
        queue.put((start, time.monotonic()))
    except BaseException as exc:      # every worker reports once; the others must not wait at the barrier
        barrier.abort()
        queue.put(("error", repr(exc)))


def bench_concurrent(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device, processes: int,
                     warmup: int = 3, steps: int = 10, n_data: int = 256, threads: int = 0,
                     amp: bool | None = None, compile_mode: str = "none") -> dict:
    """Images/s of ``processes`` training loops at ``batch`` running at once on ``device``, one
    process each (as ``RAWDRIFT_CONCURRENT_FOLDS=1`` trains folds), counted together from the
    moment all have warmed up to the moment the last one is done; each step as
    ``compile_mode`` says."""
    import torch.multiprocessing as tmp
    amp = device.type == "cuda" if amp is None else amp
    ctx = tmp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker,
                         args=(dataset, cfg_values, size, batch, str(device), amp, threads, warmup, steps, n_data, k,
                               barrier, queue, compile_mode)) for k in range(processes)]
    for proc in procs:
        proc.start()
    spans = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    errors = [s[1] for s in spans if s[0] == "error"]
    if errors:
        raise RuntimeError(f"bench_concurrent: a worker failed: {errors[0]}")
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"dataset": dataset, "size": size, "batch": batch, "processes": processes, "threads": threads,
            "compile": compile_mode, "images_per_s": processes * steps * batch / wall}


#: Tiles of the paper's two datasets; every tile is held out once, so a corruption pass over
#: all folds' held-out tiles touches each tile once per train view.
PAPER_TILES = sum(d["tiles"] for d in PAPER_PROTOCOL["datasets"].values())
#: The paper profile's tile side (px), the size the corruptions and views are measured at.
PAPER_TILE = max(d["tile"] for d in PAPER_PROTOCOL["datasets"].values())


def bench_corruptions(device: torch.device, size: int = 256, batch: int = 16, severities=(1, 3, 5),
                      windows: int = 3, steps: int = 2) -> dict:
    """Images/s of each corruption at each severity on random (batch, 3, size, size) views."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device, generator=gen)
    rates = {}
    for name in CORRUPTIONS:
        for s in severities:
            def step():
                corrupt(x, name, s, gen, scale=size / 256)
            rates[f"{name}@{s}"] = batch * _steps_per_second(step, device, 1, windows, steps)
    per_pass = sum(1.0 / r for r in rates.values())          # seconds per image through every (c, s)
    return {"size": size, "batch": batch, "images_per_s": rates,
            "paper_all_views_s": PAPER_TILES * PAPER_PROTOCOL["views"] * per_pass,
            "note": f"projected: {PAPER_TILES} tiles x {PAPER_PROTOCOL['views']} train views through every corruption "
                    "and severity"}


def bench_render(device: torch.device, size: int = 256, batch: int = 16, reference_tiles: int = 2,
                 windows: int = 3) -> dict:
    """View-images/s of the 12 static views: batched torch (float64, as the render stage) on
    ``device`` against the reference ``render_static`` on one CPU core, and the projected
    render time of the paper's tiles (1488 x the protocol's views) both ways."""
    from rawdrift.camera import CAMERAS
    from rawdrift.isp import VIEWS, render_static
    from rawdrift.isp.batched import render_batch
    cam = CAMERAS["drone"]
    gen = torch.Generator(device=device).manual_seed(0)
    raw = (torch.rand(batch, size, size, device=device, generator=gen, dtype=torch.float64) * 0.5 + 0.07)

    def step():
        for v in VIEWS:
            render_batch(raw, cam, v)
    torch_rate = batch * len(VIEWS) * _steps_per_second(step, device, 1, windows, 1)
    tiles = raw[:reference_tiles].cpu().numpy()
    start = time.perf_counter()
    for t in tiles:
        for v in VIEWS:
            render_static(t, cam, v)
    ref_rate = reference_tiles * len(VIEWS) / (time.perf_counter() - start)
    n = PAPER_TILES * PAPER_PROTOCOL["views"]     # the rate is the mean over the 12 views
    return {"size": size, "batch": batch, "torch_view_images_per_s": torch_rate,
            "reference_view_images_per_s_one_core": ref_rate, "paper_render_s_torch": n / torch_rate,
            "paper_render_s_reference_one_core": n / ref_rate, "speedup": torch_rate / ref_rate,
            "note": "render_batch float64 on the device vs render_static (numpy, colour-demosaicing) on one core"}


def project_paper(rates: dict, render_view_images_per_s: float, corruption_s_per_image: float,
                  protocol: dict = PAPER_PROTOCOL) -> dict:
    """Seconds each stage family of the paper protocol would take at the measured rates.

    Args:
        rates: per dataset {"size" (px the rates were measured at), "train", "inference",
            "joint" and optionally "train_concurrent" and "search" (forensics' search step,
            its searches stepped together at ``forensics.max_batch`` tiles per pass:
            :func:`bench_search`), in images/s.
            Rates measured below the protocol's tile are scaled by (size / tile)^2, as
            convolution cost goes with the pixel count (an approximation: small tiles leave a
            device less busy, so it overestimates them).
        render_view_images_per_s: the 12 static views at the protocol's tile (per view-image).
        corruption_s_per_image: seconds to push one image of that size through every corruption
            and severity.
        protocol: :func:`protocol`'s counts (default: the paper profile).

    Image counts per dataset (N tiles, F folds, E epochs (optimize: its own), V views, B batch,
    BN = BN_TILES):
    train V E (F-1) N training images and V E' (N + F BN) evaluated, E' the evaluated epochs
    (every ``eval_every_epochs``-th and the last; a protocol without the key evaluates every
    epoch); crosseval V V N;
    corruptions V N corrupted and V N x corruptions x severities evaluated; forensics
    groups x lambdas x epochs x (F-1) N search steps and groups x lambdas x N evaluated;
    optimize intensities x E (F-1) N images for each mode (learned at the joint rate, frozen
    and raw at the training rate: their inputs are computed once) and a validation
    (BN + N / F tiles) every eval_every steps. With concurrent folds (train, optimize) the
    training steps go at the concurrent rate, the joint steps at the joint rate times the
    same gain (not measured apart). Start-up, I/O and the CPU-side stages (fetch, summary)
    are not counted.

    Returns:
        {"datasets": {name: {stage: s, "train_concurrent": s, "optimize_concurrent": s}},
        "total_s", "total_concurrent_s", "goal_s": 3600}.
    """
    V, F = protocol["views"], protocol["folds"]
    cs = protocol["corruptions"] * protocol["severities"]
    fo, op = protocol["forensics"], protocol["optimize"]
    out, total, total_conc = {}, 0.0, 0.0
    for name, d in protocol["datasets"].items():
        r = rates[name]
        k = (r["size"] / d["tile"]) ** 2
        E, E_opt = d["epochs"], d["optimize_epochs"]
        train, infer, joint = r["train"] * k, r["inference"] * k, r["joint"] * k
        search = r.get("search", r["joint"]) * k
        conc = r.get("train_concurrent", r["train"]) * k
        n, b = d["tiles"], d["batch"]
        E_eval = len(evaluated_epochs(E, protocol.get("eval_every_epochs", 1)))
        train_imgs, train_evals = V * E * (F - 1) * n, V * E_eval * (n + F * BN_TILES)
        fold_train = (F - 1) * n / F
        opt_steps = E_opt * -(-int(fold_train) // b)
        opt_evals = op["intensities"] * op["modes"] * F * -(-opt_steps // d["eval_every"]) * (BN_TILES + n / F)
        stages = {
            "render": n * V / render_view_images_per_s,
            "train": train_imgs / train + train_evals / infer,
            "crosseval": V * V * n / infer,
            "corruptions": V * n * corruption_s_per_image + V * n * cs / infer,
            "forensics": fo["groups"] * fo["lambdas"] * (fo["epochs"] * (F - 1) * n / search + n / infer),
            "optimize": (op["intensities"] * F * E_opt * fold_train * (1 / joint + (op["modes"] - 1) / train)
                         + opt_evals / infer),
        }
        with_conc = {"train": train_imgs / conc + train_evals / infer,
                     "optimize": (op["intensities"] * F * E_opt * fold_train
                                  * (1 / (joint * conc / train) + (op["modes"] - 1) / conc) + opt_evals / infer)}
        out[name] = {**{s: float(v) for s, v in stages.items()},
                     **{f"{s}_concurrent": float(v) for s, v in with_conc.items()}}
        total += sum(stages.values())
        total_conc += sum({**stages, **with_conc}.values())
    return {"datasets": out, "total_s": total, "total_concurrent_s": total_conc, "goal_s": 3600.0}


def training_flops(dataset: str, cfg_values: dict, size: int) -> float:
    """Floating-point operations of one training image of the task model (forward and
    backward, Normalize included) at ``size`` px, counted by ``torch.utils.flop_counter`` on
    the CPU (a batch of 2, per image). Convolutions and matrix products only, as the counter
    counts them (a multiply-add is 2 operations); elementwise work is not counted. Images/s
    times this is the task model's sustained FLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = task_config(dataset, dict(cfg_values, batch_size=2))
    torch.manual_seed(0)
    model = TaskModel(cfg).train()
    x = torch.rand(2, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 2


#: Multiples of a dataset's batch at which :func:`bench_saturation` measures the bare network.
SATURATION_FACTORS = (1, 2, 5, 10, 20)


def bench_saturation(setups: dict, size: int, device: torch.device, amp: bool,
                     factors=SATURATION_FACTORS) -> dict:
    """Model-only training images/s (:func:`bench_task`'s ceiling, eager) at multiples of each
    dataset's batch: where the rate stops growing the device computes the eager kernels at its
    limit, and no data-pipeline or launch optimisation (concurrent folds) trains faster than the
    best of these. Compiled steps can: fusing elementwise operations saves memory traffic (on an
    H100 the compiled drone step at batch 12 beat the eager network's best rate at batch 240).
    A batch that does not fit in memory ends the series.

    Args:
        setups: {dataset: (task params, batch)}.
        factors: batch multiples, increasing.

    Returns:
        {dataset: {"batches": [b...], "images_per_s": [r...], "best_images_per_s": float}}.
    """
    out = {}
    for name, (values, batch) in setups.items():
        batches, rates = [], []
        for f in factors:
            try:
                r = bench_task(name, values, size, batch * f, device, amp=amp, modes=("ceiling",))
            except torch.cuda.OutOfMemoryError:
                break
            batches.append(batch * f)
            rates.append(r["ceiling_images_per_s"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        out[name] = {"batches": batches, "images_per_s": rates, "best_images_per_s": max(rates)}
    return out


def floor_rates(rates: dict, saturation: dict) -> dict:
    """:func:`project_paper`'s rates with every task-model training step (train, concurrent
    folds) at the bare eager network's best rate of :func:`bench_saturation`, or at the measured
    rate where that is faster (a compiled step); inference and the joint ISP + model steps as
    measured. The projection of these is a floor for what faster eager training loops can give."""
    def best(name: str, r: dict, key: str) -> float:
        return max(r.get(key, r["train"]), saturation[name]["best_images_per_s"])
    return {name: dict(r, train=best(name, r, "train"), train_concurrent=best(name, r, "train_concurrent"))
            for name, r in rates.items()}


def deterministic_rates(rates: dict, determinism: dict) -> dict:
    """:func:`project_paper`'s rates with the training loops (``train`` and, where measured,
    ``train_concurrent``) slowed by what ``deterministic: true`` cost the training step in
    :func:`bench_determinism` (same device, the profile's compile mode): the loops as a profile
    with that setting runs them. The concurrent folds are eager processes, so the same factor
    is an approximation there (it keeps their gain over one loop, which :func:`project_paper`
    also gives optimize's joint steps). The inference, joint and search steps stay as measured
    (their cost of determinism is not measured). A dataset missing from ``determinism`` (a
    CPU, where the flag changes nothing) keeps its rates."""
    out = {}
    for name, r in rates.items():
        f = 1 - determinism[name]["deterministic_cost"] if name in determinism else 1.0
        out[name] = dict(r, train=r["train"] * f)
        if "train_concurrent" in r:
            out[name]["train_concurrent"] = r["train_concurrent"] * f
    return out


#: Execution modes of the training step that :func:`bench_step_modes` compares (``--step-modes``):
#: eager with the default (foreach) Adam; eager with the fused Adam kernel (what the engine
#: steps on CUDA, :func:`rawdrift.training.adam`); ``torch.compile`` with
#: ``mode="reduce-overhead"`` (inductor's kernels replayed as CUDA graphs); and ``torch.compile``
#: in its default mode, both as the ``compile`` param runs them (:func:`rawdrift.training.compiled`).
STEP_MODES = ("eager", "fused_adam", "compile_cudagraphs", "compile")


def bench_step_modes(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device,
                     amp: bool, modes=STEP_MODES, warmup: int = 3, windows: int = 3, steps: int = 10) -> dict:
    """Images/s of the task model's training step (network, loss, Adam on one device-resident
    batch, as :func:`bench_task`'s ceiling) in each execution mode of ``modes``, and the
    seconds its first ``warmup`` steps took (compilation and graph capture). A mode that fails
    is recorded with its error, not raised: the comparison is what the benchmark is for.

    Returns:
        {mode: {"images_per_s", "first_steps_s", "speedup" (vs eager)} or {"error": str}}.
    """
    cfg = task_config(dataset, dict(cfg_values, batch_size=batch))
    gen = torch.Generator(device=device).manual_seed(0)
    xb, yb = _random_data(cfg, batch, size, device, gen)
    out = {}
    for mode in modes:
        try:
            torch._dynamo.reset()
            torch.manual_seed(0)
            net = TaskModel(cfg).to(device, memory_format=torch.channels_last).train().net
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=mode != "eager")
            if mode.startswith("compile"):
                net = compiled(net, "reduce-overhead" if mode == "compile_cudagraphs" else "default")

            def step():
                optimisation_step(net, opt, cfg, xb, yb, amp=amp)
            start = time.perf_counter()
            for _ in range(warmup):
                step()
            _sync(device)
            first = time.perf_counter() - start
            out[mode] = {"images_per_s": batch * _steps_per_second(step, device, 0, windows, steps),
                         "first_steps_s": first}
        except Exception as exc:     # noqa: BLE001 - a mode that cannot run is a result
            out[mode] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    _add_speedups(out)
    torch._dynamo.reset()
    return out


def _add_speedups(results: dict) -> None:
    """Set ``speedup`` (images/s over eager's) on every measured mode of ``results`` ({mode:
    {"images_per_s", ...} or {"error"}}, other keys ignored) once ``"eager"`` is measured."""
    base = results.get("eager", {}).get("images_per_s")
    for r in results.values():
        if base and isinstance(r, dict) and "images_per_s" in r:
            r["speedup"] = r["images_per_s"] / base


def bench_determinism(setups: dict, size: int, device: torch.device, amp: bool, compile_mode: str = "none",
                      quick: bool = False) -> dict:
    """What the ``deterministic`` param costs: rawdrift's training step per dataset, run as
    ``compile_mode`` says (the paper profile's: what its stages run), with the backends as
    :func:`rawdrift.runtime.configure_backends` sets them for ``deterministic: false``
    (``cudnn.benchmark``) and for ``true`` (deterministic kernels), in one run; the backends are
    left as ``false`` sets them. ``setups``: {dataset: (task params, batch)}; ``quick``: one
    step of each (:data:`QUICK`). CUDA only ({} on other devices, where the flag changes nothing)."""
    if device.type != "cuda":
        return {}
    out = {}
    for name, (values, batch) in setups.items():
        rate = {}
        for det in (False, True):
            configure_backends(device, det)
            rate[det] = bench_task(name, values, size, batch, device, amp=amp, modes=("pipeline",),
                                   compile_mode=compile_mode, **(QUICK if quick else {}))["pipeline_images_per_s"]
        out[name] = {"compile": compile_mode, "fast_images_per_s": rate[False],
                     "deterministic_images_per_s": rate[True], "deterministic_cost": 1.0 - rate[True] / rate[False]}
    configure_backends(device, False)
    return out


#: Step counts of a measurement run only for what it compiles (:func:`warm_compiles`): one
#: step, at the measured shapes.
QUICK = {"warmup": 1, "windows": 1, "steps": 1}
#: The same for :func:`bench_search`, whose first call (one epoch) compiles: one timed call of one step.
QUICK_SEARCH = {"windows": 1, "steps": 1, "epochs": 1}


def search_shape(device: torch.device) -> tuple[int, int]:
    """Forensics' search step as the bench measures it: (tiles per search, searches stepped
    together), the paper profile's ``forensics.batch_size`` and ``max_batch // batch_size``
    (on a CPU ``max_batch`` at most 64)."""
    fo = PAPER_PROTOCOL["forensics"]
    max_batch = fo["max_batch"] if device.type == "cuda" else min(fo["max_batch"], 64)
    return fo["batch_size"], max(1, max_batch // fo["batch_size"])


def compiled_rates(dataset: str, cfg_values: dict, size: int, batch: int, device: torch.device, amp: bool,
                   compile_mode: str, quick: bool = False) -> dict:
    """The measurements of one dataset that run in ``compile_mode``: the training step
    (:func:`bench_task`, ceiling, pipeline and assembled), optimize's joint step
    (:func:`bench_joint_step`) and forensics' search step (:func:`bench_search`, at
    :func:`search_shape`). ``quick``: each one step at its shapes (:data:`QUICK`), for what it
    compiles, not for its rate (:data:`QUICK_SEARCH` for the search).

    Returns:
        {"run": bench_task's record, "joint": images/s, "search": images/s}.
    """
    kw = QUICK if quick else {}
    tiles, searches = search_shape(device)
    return {"run": bench_task(dataset, cfg_values, size, batch, device, amp=amp, compile_mode=compile_mode, **kw),
            "joint": bench_joint_step(dataset, cfg_values, size, batch, device, amp=amp, compile_mode=compile_mode,
                                      **kw),
            "search": bench_search(dataset, cfg_values, size, tiles, searches, device, amp=amp,
                                   compile_mode=compile_mode, **(QUICK_SEARCH if quick else {}))}


def eager_search_rate(dataset: str, cfg_values: dict, size: int, device: torch.device, amp: bool, **counts) -> float:
    """Forensics' search step eager (:func:`bench_search` at :func:`search_shape`, ``compile:
    none``), beside the profile's compiled one: whether compiling the searches pays on this
    device. ``counts``: :func:`bench_search`'s ``windows``, ``steps`` and ``epochs``."""
    tiles, searches = search_shape(device)
    return bench_search(dataset, cfg_values, size, tiles, searches, device, amp=amp, compile_mode="none", **counts)


def warm_compiles(setups: dict, size: int, device: torch.device, amp: bool, compile_mode: str) -> None:
    """Compile every graph the bench runs compiled (:func:`compiled_rates` and
    :func:`bench_determinism`, each one step at its shapes) and measure nothing. Inductor's
    FX-graph cache and AOTAutograd's cache keep the compiled graphs on disk
    (``TORCHINDUCTOR_CACHE_DIR``), so a bench process started afterwards with the same cache
    loads them instead of compiling (on a 2-core CPU, ResNet18's two training-step graphs: 43 s
    cold, 4 s from the cache). ``make gpu-check`` runs it, one process per dataset, beside the
    CUDA tests. ``setups``: {dataset: (task params, batch)}; nothing to do for ``none``."""
    if compile_mode == "none":
        return
    for name, (values, batch) in setups.items():
        compiled_rates(name, values, size, batch, device, amp, compile_mode, quick=True)
    bench_determinism(setups, size, device, amp, compile_mode, quick=True)


def _write_step_modes(setups: dict, size: int, device: torch.device, amp: bool, out: Path) -> None:
    """``--step-modes``: :func:`bench_step_modes` per dataset at its paper batch, to
    ``<out>/<device>-step-modes.json`` (rewritten after every mode: a run cut short keeps what
    it measured), one line per mode on stdout. Mode by mode, every dataset's eager modes before
    any compilation: inductor's compile workers stay behind and take CPU time that a
    launch-bound step needs."""
    path = out / f"{device.type}-step-modes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    modes: dict = {name: {"batch": batch} for name, (_, batch) in setups.items()}
    for mode in STEP_MODES:
        for name, (values, batch) in setups.items():
            r = modes[name][mode] = bench_step_modes(name, values, size, batch, device, amp, modes=(mode,))[mode]
            _add_speedups(modes[name])
            path.write_text(json.dumps({"device": device_name(device), "torch": torch.__version__, "size": size,
                                        "bf16": amp, "modes": modes}, indent=2) + "\n")
            print(f"{name} {mode}: " + (f"failed: {r['error']}" if "error" in r else
                  f"{r['images_per_s']:.0f} img/s ({r.get('speedup', 1.0):.2f}x eager), first steps "
                  f"{r['first_steps_s']:.1f} s"), flush=True)
    print(f"wrote {path}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (as the precision param)")
    ap.add_argument("--size", type=int, default=None,
                    help=f"tile side (default: the paper profile's, {PAPER_TILE}, on CUDA; 64 on CPU)")
    ap.add_argument("--out", default="bench")
    ap.add_argument("--step-modes", action="store_true",
                    help="only compare the training step's execution modes (eager, fused Adam, torch.compile, "
                         "CUDA graphs): <out>/<device>-step-modes.json")
    ap.add_argument("--warm", action="store_true",
                    help="only compile what the bench runs compiled, each graph once, measuring and writing "
                         "nothing but inductor's cache (TORCHINDUCTOR_CACHE_DIR), which a later bench loads")
    ap.add_argument("--datasets", default=None,
                    help="with --step-modes or --warm: comma-separated datasets (default: all of the paper profile)")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
        amp = resolve_precision(args.precision, device)
    except ParamError as e:          # the library names the value; here it came from a flag
        ap.exit(2, f"error: --{e.key}: {e.problem}\n")
    size = args.size or (PAPER_TILE if device.type == "cuda" else 64)
    cuda = device.type == "cuda"
    if cuda:        # before the first cuBLAS handle, so that the deterministic runs can use it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    configure_backends(device, False)        # the fast path (cudnn.benchmark) unless measured otherwise
    folds = PAPER_PROTOCOL["folds"]
    # the paper profile's task models at its batches (on a CPU at most 32 tiles a step)
    setups = {name: (d["task"], d["batch"] if cuda else min(d["batch"], 32))
              for name, d in PAPER_PROTOCOL["datasets"].items()
              if not args.datasets or name in args.datasets.split(",")}
    if args.datasets and not (args.step_modes or args.warm):
        ap.exit(2, "error: --datasets: only with --step-modes or --warm (the projection needs every dataset)\n")
    if not setups:
        ap.exit(2, f"error: --datasets: none of {args.datasets!r} is a dataset of the paper profile "
                   f"({', '.join(PAPER_PROTOCOL['datasets'])})\n")
    if args.step_modes:
        _write_step_modes(setups, size, device, amp, Path(args.out))
        return
    mode = PAPER_PROTOCOL["compile"]           # the training steps as the profile runs them
    if args.warm:
        start = time.perf_counter()
        warm_compiles(setups, size, device, amp, mode)
        print(f"compiled ({mode}) for {', '.join(setups)} in {time.perf_counter() - start:.0f} s")
        return
    runs, concurrent, rates = [], [], {}
    for name, (values, batch) in setups.items():
        measured = compiled_rates(name, values, size, batch, device, amp, mode)
        run = measured["run"]
        # eager: the alternative to the compiled loop (five processes compiling would double the bench's time)
        conc = bench_concurrent(name, values, size, batch, device, folds, amp=amp,   # threads as the stages set them
                                steps=10 if cuda else 3)
        conc["ceiling_at_summed_batch_images_per_s"] = bench_task(
            name, values, size, batch * folds, device, amp=amp, modes=("ceiling",))["ceiling_images_per_s"]
        conc["speedup"] = conc["images_per_s"] / run["pipeline_images_per_s"]
        runs.append(run)
        concurrent.append(conc)
        rates[name] = {"size": size, "train": run["pipeline_images_per_s"], "train_concurrent": conc["images_per_s"],
                       "inference": bench_inference(name, values, size, max(batch, 64), device, amp=amp,
                                                    n_data=256 if cuda else 64),
                       "joint": measured["joint"], "search": measured["search"]}
        if mode != "none":
            rates[name]["search_eager"] = eager_search_rate(name, values, size, device, amp)
    flops = {name: training_flops(name, values, size) for name, (values, _) in setups.items()}
    for r in runs:
        r["training_tflop_per_s"] = r["pipeline_images_per_s"] * flops[r["dataset"]] / 1e12
    determinism = bench_determinism(setups, size, device, amp, compile_mode=mode)
    saturation = bench_saturation(setups, size, device, amp) if cuda else {}
    corr = bench_corruptions(device, PAPER_TILE, 64 if cuda else 8)
    render = bench_render(device, PAPER_TILE, 64 if cuda else 4)
    per_image = sum(1.0 / r for r in corr["images_per_s"].values())
    projection = project_paper(rates, render["torch_view_images_per_s"], per_image)
    if saturation:
        projection["floor"] = project_paper(floor_rates(rates, saturation), render["torch_view_images_per_s"],
                                            per_image)
    if PAPER_PROTOCOL["deterministic"] and determinism:
        projection["deterministic"] = project_paper(deterministic_rates(rates, determinism),
                                                    render["torch_view_images_per_s"], per_image)
    result = {"device": device_name(device), "torch": torch.__version__, "runs": runs, "concurrent": concurrent,
              "rates": rates, "training_gflop_per_image": {n: f / 1e9 for n, f in flops.items()},
              "determinism": determinism, "saturation": saturation, "corruptions": corr, "render": render,
              "projection": projection, "protocol": PAPER_PROTOCOL}
    out = Path(args.out) / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(f"{r['dataset']}: {r['pipeline_images_per_s']:.0f} img/s through rawdrift vs "
              f"{r['ceiling_images_per_s']:.0f} model-only ({100 * r['ratio']:.0f} %; "
              f"{r['assembled_images_per_s']:.0f} on a batch assembled once), {size} px, batch {r['batch']}, "
              f"{'bf16' if amp else 'fp32'}, {r['training_tflop_per_s']:.1f} TFLOP/s, "
              f"{result['device']}")
    for c in concurrent:
        print(f"{c['dataset']}: {c['processes']} folds at once, eager: {c['images_per_s']:.0f} img/s together "
              f"({c['speedup']:.2f}x one loop) vs {c['ceiling_at_summed_batch_images_per_s']:.0f} model-only at batch "
              f"{c['batch'] * c['processes']}")
    tiles, searches = search_shape(device)
    for name, r in rates.items():
        if "search_eager" in r:
            print(f"{name}: forensics' search step {r['search']:.0f} img/s ({mode}) vs {r['search_eager']:.0f} eager "
                  f"({r['search'] / r['search_eager']:.2f}x), {searches} searches of {tiles} tiles a pass")
    for name, d in determinism.items():
        print(f"{name}: deterministic: true costs {100 * d['deterministic_cost']:.0f} % of the training step "
              f"(compile: {d['compile']}) "
              f"({d['deterministic_images_per_s']:.0f} vs {d['fast_images_per_s']:.0f} img/s)")
    print(f"corruptions: {PAPER_TILES} paper tiles x {PAPER_PROTOCOL['views']} views x "
          f"{PAPER_PROTOCOL['corruptions']} corruptions x {PAPER_PROTOCOL['severities']} severities at {PAPER_TILE} px: "
          f"{corr['paper_all_views_s']:.0f} s projected ({result['device']})")
    print(f"render: {PAPER_PROTOCOL['views']} views at {PAPER_TILE} px: "
          f"{render['torch_view_images_per_s']:.0f} view-images/s batched on {device.type} vs "
          f"{render['reference_view_images_per_s_one_core']:.1f} reference on one core "
          f"({render['speedup']:.1f}x); paper render {render['paper_render_s_torch']:.0f} s vs "
          f"{render['paper_render_s_reference_one_core']:.0f} s")
    for name, st in projection["datasets"].items():
        print(f"paper protocol, {name}: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in st.items()))
    print(f"paper protocol: {projection['total_s'] / 60:.0f} min projected, "
          f"{projection['total_concurrent_s'] / 60:.0f} min with concurrent folds (goal 60 min)"
          + ("" if size == PAPER_TILE else f"; rates measured at {size} px and scaled by pixel count"))
    if "deterministic" in projection:
        print(f"paper protocol as the profile runs it, deterministic: true (its measured cost on the training "
              f"loops only): {projection['deterministic']['total_s'] / 60:.0f} min projected")
    for name, sat in saturation.items():
        print(f"{name}: model-only " + ", ".join(f"{r:.0f}" for r in sat["images_per_s"]) + " img/s at batch "
              + ", ".join(map(str, sat["batches"])))
    if "floor" in projection:
        print(f"paper protocol with every training step at the best model-only rate: "
              f"{projection['floor']['total_concurrent_s'] / 60:.0f} min")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
