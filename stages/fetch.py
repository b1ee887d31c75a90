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
from rawdrift.errors import RawdriftError
from rawdrift.sources import folder, synthetic, zenodo
from rawdrift.cli import dataset_arg, run


def main(argv: list[str]) -> str:
    dataset = dataset_arg(argv, "fetch.py")
    params = P.load_params()
    source = P.get(params, "data.source")
    if source not in P.SOURCES:
        raise RawdriftError(f"params.yaml: data.source must be one of {', '.join(P.SOURCES)}, got {source!r}")
    out = Path("data/raw") / dataset
    common = dict(tile=P.int_param(params, f"data.{dataset}.tile", 16, 4096),
                  folds=P.int_param(params, "data.folds", 2, 100), seed=P.int_param(params, "seed", 0),
                  intensities=P.ratios_param(params, "data.intensities"))
    if source == "synthetic":
        optics = P.get(params, f"data.{dataset}").get("optics", "matched")
        meta = synthetic.generate(dataset, out, count=P.int_param(params, f"data.{dataset}.count", 1),
                                  workers=P.workers(), optics=optics, **common)
    else:
        count = P.int_param(params, f"data.{dataset}.count", 0)
        classes = P.get(params, f"data.{dataset}").get("classes")
        if source == "folder":
            root = P.get(params, f"data.{dataset}").get("path")
            if not isinstance(root, str) or not root:
                raise RawdriftError(f"params.yaml: data.{dataset}.path must name the folder for data.source: folder")
            provenance = {}
        else:
            z = P.zenodo_params(params)
            root = zenodo.fetch_record(dataset, z["downloads"], z["api"], z["record"], z["max_bytes"],
                                       retries=z["retries"])
            provenance = {"record": z["record"], "doi": f"10.5281/zenodo.{z['record']}", "licence": "CC BY 4.0"}
        meta = folder.build(dataset, root, out, count=count, classes=classes, source=source,
                            provenance=provenance, **common)
    counts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in meta["class_counts"].items())
    return (f"fetch@{dataset}: {meta['count']} tiles {meta['height']}x{meta['width']} at "
            f"{len(meta['intensities'])} intensities, {meta['folds']} folds ({counts})")


if __name__ == "__main__":
    run(main)
