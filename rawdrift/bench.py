"""Training throughput of the task models against the model-only ceiling, on the current device.

``make bench`` (or ``python -m rawdrift.bench``) measures, in one run on one device:

- ceiling: the bare network on random device tensors (no data pipeline, no augmentation);
  channels_last, bf16 autocast as ``--precision`` resolves it (auto: where native);
- pipeline: the same network through ``rawdrift.training``'s hot loop (index gather from the
  device-resident view tensor, dihedral augmentation on the device, Normalize, loss, Adam);

the static views (batched torch on the device against the numpy reference on one core), and
the common corruptions (images/s per corruption and severity at the paper's 256 px, and
the projected time to corrupt the held-out tiles of all 12 views x 10 corruptions x 3
severities at paper size: 940 + 548 tiles), and writes ``bench/<device>.json`` with
images/s, their ratio, and the device name. Timings are medians of repeated windows after
warm-up; no test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rawdrift.corruptions import CORRUPTIONS, corrupt
from rawdrift.runtime import resolve_device, resolve_precision
from rawdrift.tasks import TaskModel, task_config
from rawdrift.training import dihedral_augment, optimisation_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
               warmup: int = 3, windows: int = 3, steps: int = 5, amp: bool | None = None) -> dict:
    """Images/s of the training step for one task model: ceiling vs rawdrift's pipeline."""
    cfg = task_config(dataset, dict(cfg_values, batch_size=batch), f"bench.{dataset}")
    amp = device.type == "cuda" if amp is None else amp
    fmt = torch.channels_last
    gen = torch.Generator(device=device).manual_seed(0)
    seg = cfg.task == "segmentation"

    def target(n):
        if seg:
            return (torch.rand(n, size, size, device=device, generator=gen) > 0.9).to(torch.uint8)
        return torch.randint(0, cfg.classes, (n,), device=device, generator=gen)

    results = {}
    for mode in ("ceiling", "pipeline"):
        torch.manual_seed(0)
        model = TaskModel(cfg).to(device, memory_format=fmt).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        if mode == "ceiling":
            xb = torch.rand(batch, 3, size, size, device=device, generator=gen).contiguous(memory_format=fmt)
            yb = target(batch)

            def step():
                optimisation_step(model.net, opt, cfg, xb, yb, amp=amp)
        else:
            x_all = torch.rand(n_data, 3, size, size, device=device, generator=gen).contiguous(memory_format=fmt)
            y_all = target(n_data)

            def step():
                idx = torch.randint(0, n_data, (batch,), device=device, generator=gen)
                xb, yb = dihedral_augment(x_all[idx], y_all[idx], gen)
                optimisation_step(model, opt, cfg, xb, yb, amp=amp)
        results[mode] = batch * _steps_per_second(step, device, warmup, windows, steps)
    return {"dataset": dataset, "size": size, "batch": batch, "config": cfg.to_dict(),
            "ceiling_images_per_s": results["ceiling"], "pipeline_images_per_s": results["pipeline"],
            "bf16": amp, "ratio": results["pipeline"] / results["ceiling"]}


#: Tiles of the paper's two datasets; every tile is held out once, so a corruption pass over
#: all folds' held-out tiles touches each tile once per train view.
PAPER_TILES = 940 + 548


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
            "paper_all_views_s": PAPER_TILES * 12 * per_pass,
            "note": "projected: 1488 tiles x 12 train views through every corruption and severity"}


def bench_render(device: torch.device, size: int = 256, batch: int = 16, reference_tiles: int = 2,
                 windows: int = 3) -> dict:
    """View-images/s of the 12 static views: batched torch (float64, as the render stage) on
    ``device`` against the reference ``render_static`` on one CPU core, and the projected
    render time of the paper's tiles (1488 x 12 views) both ways."""
    import numpy as np
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
    n = PAPER_TILES * len(VIEWS)
    return {"size": size, "batch": batch, "torch_view_images_per_s": torch_rate,
            "reference_view_images_per_s_one_core": ref_rate, "paper_render_s_torch": n / torch_rate,
            "paper_render_s_reference_one_core": n / ref_rate, "speedup": torch_rate / ref_rate,
            "note": "render_batch float64 on the device vs render_static (numpy, colour-demosaicing) on one core"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (as the precision param)")
    ap.add_argument("--size", type=int, default=None, help="tile side (default 256 on CUDA, 64 on CPU)")
    ap.add_argument("--out", default="bench")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    amp = resolve_precision(args.precision, device)
    size = args.size or (256 if device.type == "cuda" else 64)
    paper_drone = dict(arch="unetplusplus", encoder="resnet34", encoder_depth=5,
                       decoder_channels=[256, 128, 64, 32, 16], loss="dice")
    runs = [bench_task("microscopy", {}, size, 128 if device.type == "cuda" else 32, device, amp=amp),
            bench_task("drone", paper_drone, size, 12, device, amp=amp)]
    corr = bench_corruptions(device, 256, 64 if device.type == "cuda" else 8)
    render = bench_render(device, 256, 64 if device.type == "cuda" else 4)
    result = {"device": device_name(device), "torch": torch.__version__, "runs": runs, "corruptions": corr,
              "render": render}
    out = Path(args.out) / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(f"{r['dataset']}: {r['pipeline_images_per_s']:.0f} img/s through rawdrift vs "
              f"{r['ceiling_images_per_s']:.0f} model-only ({100 * r['ratio']:.0f} %), {size} px, batch {r['batch']}, "
              f"{'bf16' if amp else 'fp32'}, "
              f"{result['device']}")
    print(f"corruptions: {PAPER_TILES} paper tiles x 12 views x 10 corruptions x 3 severities at 256 px: "
          f"{corr['paper_all_views_s']:.0f} s projected ({result['device']})")
    print(f"render: 12 views at 256 px: {render['torch_view_images_per_s']:.0f} view-images/s batched on "
          f"{device.type} vs {render['reference_view_images_per_s_one_core']:.1f} reference on one core "
          f"({render['speedup']:.1f}x); paper render {render['paper_render_s_torch']:.0f} s vs "
          f"{render['paper_render_s_reference_one_core']:.0f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
