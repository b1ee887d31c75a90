"""Headline metrics: the few figures a person compares between runs, as small flat JSON files.

``dvc.yaml`` declares only these files as ``metrics`` (the detailed results stay in git as
plot data), so ``dvc exp show`` fits a terminal and ``dvc metrics diff`` lists only the figures
that changed. Each file is written by the stage that owns its figures, so an experiment changes
only its own stages' rows (``-S forensics.lambda=...`` touches ``forensics_<dataset>.json``):

===================================================  ==========================================
``metrics/headline/summary.json`` (summary)          ``<ds>.diag``, ``.off``, ``.drop`` (the 12 x 12
                                                     matrix), ``.cdrop``, ``.ratio`` (corruptions at
                                                     ``summary_severity``), ``.top3`` (overlap count)
``metrics/headline/optimize_<dataset>.json``         ``<ds>.<mode>.<scale>``: paper table 2 (mean)
``metrics/headline/forensics_<dataset>.json``        ``<ds>.l2.<group>`` safe l2, ``<ds>.lam.<group>``
                                                     the mildest failing lambda (absent: none failed)
``metrics/headline/train/<dataset>/<view>.json``     ``<ds>.<view>``: held-out mean of the train stage
===================================================  ==========================================

``<ds>`` is :data:`PREFIX` (``mic``, ``dro``) and the groups are :data:`GROUP`'s short names:
DVC flattens keys with dots and ``dvc exp show`` heads each column with the key alone, so short,
unique keys keep a column as wide as its number. Values are rounded to :data:`DIGITS`
significant digits (the detailed JSON keeps them all).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("metrics/headline")
PREFIX = {"microscopy": "mic", "drone": "dro"}
GROUP = {"all": "all", "black_level": "bl", "demosaic": "dm", "white_balance": "wb", "colour_matrix": "cm",
         "sharpening": "sh", "denoising": "dn", "gamma": "ga"}
DIGITS = 4


def rounded(x: float | int | None, digits: int = DIGITS) -> float | int | None:
    """``x`` to ``digits`` significant digits (ints and None unchanged)."""
    if x is None or isinstance(x, int):
        return x
    return float(f"{float(x):.{digits}g}")


def summary_headline(summary: dict) -> dict:
    """``metrics/headline/summary.json`` from ``metrics/summary.json``'s per-dataset dict."""
    out = {}
    for dataset, s in summary.items():
        d, c = s["drift_synthesis"], s["corruptions"]
        out[PREFIX[dataset]] = {"diag": rounded(d["diagonal_mean"]), "off": rounded(d["off_diagonal_mean"]),
                                "drop": rounded(d["drop"]), "cdrop": rounded(c["corruption_drop"]),
                                "ratio": rounded(c["ratio"]), "top3": len(c["top_overlap"])}
    return out


def forensics_headline(dataset: str, signature: dict) -> dict:
    """``metrics/headline/forensics_<dataset>.json`` from the forensic signature: per searched
    group the safe l2 and the mildest lambda that fell out of the band (none: no key)."""
    l2, lam = {}, {}
    for group, g in signature["groups"].items():
        l2[GROUP[group]] = rounded(g["safe_l2"])
        if g["fails_at"] is not None:
            lam[GROUP[group]] = rounded(g["fails_at"]["lambda"])
    return {PREFIX[dataset]: {"l2": l2, "lam": lam}}


def optimize_headline(dataset: str, summary: dict) -> dict:
    """``metrics/headline/optimize_<dataset>.json`` from ``metrics/optimize/<dataset>.json``:
    paper table 2 (mean over folds and validation steps) per mode and raw intensity."""
    out: dict = {}
    for s in summary["settings"].values():
        scale = f"s{int(round(s['intensity'] * 100)):03d}"
        out.setdefault(s["mode"], {})[scale] = rounded(s["table"]["mean"])
    return {PREFIX[dataset]: out}


def train_headline(dataset: str, view: str, mean: float) -> dict:
    """``metrics/headline/train/<dataset>/<view>.json``: the train stage's held-out mean."""
    return {PREFIX[dataset]: {view: rounded(mean)}}


def flatten(obj: dict, prefix: str = "") -> dict[str, float]:
    """Dotted keys, as DVC shows them."""
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def write_all(root: str | Path = ".") -> list[Path]:
    """Every headline file from the detailed results already in ``metrics/`` (what the stages
    write, without running them); returns the files written."""
    from rawdrift.io import read_json, write_json
    root = Path(root)
    written = []

    def put(rel: Path, obj: dict) -> None:
        write_json(root / rel, obj)
        written.append(root / rel)

    if (root / "metrics/summary.json").exists():
        put(ROOT / "summary.json", summary_headline(read_json(root / "metrics/summary.json")))
    for dataset in PREFIX:
        sig = root / f"metrics/forensics/{dataset}_signature.json"
        if sig.exists():
            put(ROOT / f"forensics_{dataset}.json", forensics_headline(dataset, read_json(sig)))
        opt = root / f"metrics/optimize/{dataset}.json"
        if opt.exists():
            put(ROOT / f"optimize_{dataset}.json", optimize_headline(dataset, read_json(opt)))
        for train in sorted((root / "metrics/train" / dataset).glob("*.json")):
            put(ROOT / "train" / dataset / train.name,
                train_headline(dataset, train.stem, read_json(train)["mean"]))
    return written


if __name__ == "__main__":
    print(f"wrote {len(write_all())} headline file(s) under {ROOT}/")
