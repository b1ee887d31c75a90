"""Stage forensics@<dataset>: adversarial search over the data model (paper section 5.2, figure 6).

Usage: python stages/forensics.py <dataset>
The fold models trained on view bi_s_ga, frozen; for every searched group x lambda x fold the
constrained ParametrizedISP is searched on the fold's training tiles (eq. 9) and evaluated on
its held-out tiles. Writes metrics/forensics/<dataset>.json (sweep), <dataset>_signature.json
and <dataset>_signature.md (forensic signature), its headline
metrics/headline/forensics_<dataset>.json, plots/forensics/<dataset>.png (metric vs lambda,
l2 vs metric) and plots/forensics/<dataset>_tiles.png (one tile at several lambda).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rawdrift import params as P
from rawdrift.camera import RAW_SCALE
from rawdrift.forensics import (REGULARISERS, SEARCHES, SearchSettings, forensic_signature, forensics_sweep, lambda_key,
                                signature_markdown)
from rawdrift.io import atomic_file, write_json
from rawdrift.isp import REFERENCE_VIEW, ParametrizedISP
from rawdrift.models import check_fold_counts, load_fold_model
from rawdrift.reports import forensics_figure, forensics_tiles
from rawdrift.runtime import stage_platform
from rawdrift.sources.store import load_raw_dataset, load_targets
from rawdrift.cli import dataset_arg, run
from rawdrift.headline import ROOT as HEADLINE, forensics_headline

#: The view the searched models were trained on: ParametrizedISP's initial parameters (eq. 6).
VIEW = REFERENCE_VIEW


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "forensics.py")
    params = P.load_params()
    fp = P.forensics_params(params, SEARCHES, REGULARISERS)
    seed = P.seed(params)
    with P.sourced():             # the values are checked there; params.yaml is where they came from
        platform = stage_platform(*P.platform_values(params), compile=P.compile_value(params))
    device, amp = platform.device, platform.amp
    ds = load_raw_dataset(Path("data/raw") / dataset)
    model_dir = Path("models") / dataset / VIEW
    check_fold_counts(model_dir.parent, [VIEW], int(ds.folds.max()) + 1)
    cfg = load_fold_model(model_dir, 0).cfg
    raw = torch.from_numpy(np.asarray(ds.raw(1.0), dtype=np.float32) / np.float32(RAW_SCALE)).to(device)
    targets = load_targets(ds).to(device)
    settings = SearchSettings(lam=0.0, epochs=fp.epochs, lr=fp.lr, batch_size=fp.batch_size,
                              regulariser=fp.regulariser)
    torch.manual_seed(seed)
    result = forensics_sweep(lambda k: load_fold_model(model_dir, k, device), cfg, ds.camera, raw, targets, ds.folds,
                             fp.lambdas, fp.groups, settings, search_tiles=fp.search_tiles, seed=seed, amp=amp,
                             max_batch=fp.max_batch, compile_mode=platform.compile)
    signature = forensic_signature(result, fp.tolerance)
    out = Path("metrics/forensics")
    write_json(out / f"{dataset}.json", result | {"platform": platform.record()})
    write_json(out / f"{dataset}_signature.json", signature)
    with atomic_file(out / f"{dataset}_signature.md") as tmp:
        tmp.write_text(signature_markdown(signature, dataset))
    write_json(HEADLINE / f"forensics_{dataset}.json", forensics_headline(dataset, signature))
    plots = Path("plots/forensics")
    forensics_figure(result, plots / f"{dataset}.png",
                     f"{dataset}: frozen model (trained on bi,s,ga) after {fp.epochs} epochs of search per group "
                     f"({fp.regulariser} regulariser, {result['folds']} folds)")
    _tiles_figure(result, ds, raw, plots / f"{dataset}_tiles.png", dataset)
    worst = min(signature["groups"].items(), key=lambda kv: kv[1]["strongest"]["metric"])
    return (f"forensics@{dataset}: {len(fp.groups)} groups x {len(fp.lambdas)} lambdas x {result['folds']} folds; "
            f"clean {result['metric']} {result['clean']['mean']:.3f}, most harmful: {worst[0]} -> "
            f"{worst[1]['strongest']['metric']:.3f} at lambda {worst[1]['strongest']['lambda']:g}")


def _tiles_figure(result: dict, ds, raw: torch.Tensor, out: Path, dataset: str) -> None:
    """The first held-out tile of fold 0, clean and through fold 0's searched parameters at up to 6 lambdas."""
    group = "all" if "all" in result["groups"] else result["groups"][0]
    index = int(np.flatnonzero(ds.folds == 0)[0])
    x = raw[index:index + 1].cpu()
    lambdas = result["lambdas"]
    pick = [lambdas[i] for i in sorted(set(np.linspace(0, len(lambdas) - 1, min(6, len(lambdas))).round().astype(int)))]
    isp = ParametrizedISP(ds.camera)
    with torch.no_grad():
        clean = isp(x)[0].numpy()
        tiles = [isp.load_dict(result["results"][group][lambda_key(lam)]["parameters"][0])(x)[0].numpy() for lam in pick]
    labels = [f"lambda {lam:g}" for lam in pick]
    forensics_tiles(clean, tiles, labels, out,
                    f"{dataset} tile {ds.ids[index]}: searched parameters ({group}, fold 0) at several lambda")


if __name__ == "__main__":
    run(main)
