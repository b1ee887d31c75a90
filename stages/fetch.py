"""Stage fetch@<dataset>: write data/raw/<dataset>/ from the configured source.

Usage: python stages/fetch.py <dataset>
``data.source``: ``synthetic`` (embedded, default), ``folder`` (``data.<dataset>.path``: the
record's layout or your own TIFF / DNG raws) or ``zenodo`` (downloads record 5235536, see
``data.zenodo``). DVC does not watch the folder of the ``folder`` source: after changing its
files run ``dvc repro -f -s fetch@<dataset>``.
"""

from __future__ import annotations

from pathlib import Path

from rawdrift import params as P
from rawdrift.sources import folder, synthetic, zenodo
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "fetch.py")
    params = P.load_params()
    data = P.data_params(params, dataset)
    out = Path("data/raw") / dataset
    common = dict(tile=data.tile, folds=data.folds, seed=P.seed(params), intensities=list(data.intensities))
    if data.source == "synthetic":
        with P.sourced(f"data.{dataset}"):
            meta = synthetic.generate(dataset, out, count=data.count, workers=P.workers(), optics=data.optics,
                                      **common)
    elif data.source == "folder":
        with P.sourced(f"data.{dataset}"):
            meta = folder.build(dataset, data.path, out, count=data.count, classes=data.classes, source=data.source,
                                provenance={}, **common)
    else:
        z = data.zenodo
        root = zenodo.fetch_record(dataset, z.downloads, z.api, z.record, z.max_bytes, retries=z.retries)
        provenance = {"record": z.record, "doi": f"10.5281/zenodo.{z.record}", "licence": "CC BY 4.0"}
        meta = folder.build(dataset, root, out, count=data.count, classes=data.classes, source=data.source,
                            provenance=provenance, **common)
    counts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in meta["class_counts"].items())
    return (f"fetch@{dataset}: {meta['count']} tiles {meta['height']}x{meta['width']} at "
            f"{len(meta['intensities'])} intensities, {meta['folds']} folds ({counts})")


if __name__ == "__main__":
    run(main)
