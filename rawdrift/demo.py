"""The whole DAG at the demo's tiny profile, in a scratch workspace.

``python -m rawdrift.demo [--keep DIR]`` (``make demo``) copies the code (the working tree's files
that git tracks or does not ignore, without the committed results) into a new folder (DIR, or a fresh temporary folder), makes it
its own git repository with its own ``dvc init`` and DVC cache, writes :data:`PROFILE` as
``params.yaml``, runs ``dvc repro`` and commits the results, then prints where every artifact
is. The workspace it was started from and its DVC cache are not touched, and the folder stays,
so ``dvc exp show``, ``dvc exp run -S ...``, ``dvc metrics diff`` and ``dvc plots show`` can be
tried there. The numbers mean nothing (3 views, 18 microscopy and 6 drone tiles of 32 px, two
folds, one epoch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rawdrift.errors import RawdriftError

SOURCE = Path(__file__).resolve().parents[1]

#: The demo's changes to params.yaml: the data of tests/stages/test_stages.py's SMALL in two folds,
#: every stage at its smallest.
PROFILE = {
    "seed": 1, "device": "cpu", "precision": "fp32",
    # three views, one per demosaicing algorithm (bi_s_ga: where forensics starts; ma_s_ga: the
    # default run's worst train view): every artifact, a quarter of the 12-view matrix's stages
    "views": ["bi_s_ga", "ma_s_ga", "me_u_me"],
    "data": {"source": "synthetic", "folds": 2, "intensities": [0.1, 1.0],
             "microscopy": {"count": 18, "tile": 32}, "drone": {"count": 6, "tile": 32}},
    "train": {
        "microscopy": {"arch": "resnet18", "epochs": 1, "batch_size": 6, "lr": 0.001, "schedule": "cosine",
                       "loss": "ce", "pretrained": False},
        "drone": {"arch": "unet", "encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4],
                  "epochs": 1, "batch_size": 2, "lr": 0.004, "schedule": "cosine", "loss": "dice_bce",
                  "pretrained": False},
    },
    "corruptions": {"names": ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                              "zoom_blur", "contrast", "brightness", "saturate", "elastic_transform"],
                    "severities": [3], "summary_severity": 3, "reference_tile": 256},
    "forensics": {"lambda": [100.0, 1.0],
                  "parameters": ["all", "black_level", "demosaic", "white_balance", "colour_matrix", "sharpening",
                                 "denoising", "gamma"],
                  "epochs": 2, "lr": 0.05, "batch_size": 6, "search_tiles": 6, "regulariser": "l2",
                  "tolerance": 0.05},
    "optimize": {"modes": ["learned", "frozen", "raw"], "intensities": [1.0], "isp_lr": 0.05,
                 "microscopy": {"epochs": 1, "eval_every": 2}, "drone": {"epochs": 1, "eval_every": 2}},
}

#: What the demo does not copy: the committed results (it makes its own), tests and benchmarks.
SKIP = ("metrics/", "plots/", "tests/", "bench/", ".ci/", ".dvc/", "dvc.lock", "params.yaml",
        "studies/")      # the studies are their own pipelines, not part of the DAG the demo shows


#: Top-level folders a checkout without git has that git would ignore (outputs, environments).
UNTRACKED = ("data", "models", "dvc_plots", "downloads")


def profile(source: Path = SOURCE, overrides: dict | None = None) -> dict:
    """``source``'s params.yaml with :data:`PROFILE` laid over it, then ``overrides`` (top-level
    params such as ``{"device": "cuda"}``)."""
    from rawdrift.params import load_params

    def merge(base: dict, patch: dict) -> dict:
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
        return out
    return merge(load_params(source / "params.yaml"), merge(PROFILE, overrides or {}))


def code_files(source: Path = SOURCE) -> list[str]:
    """The files to copy: what git tracks in ``source`` and new files it does not ignore, as they
    are in its working tree."""
    if not (source / ".git").exists():
        # a copy of the working tree without its repository (as a GPU machine gets it): every
        # file but hidden ones and the pipeline's own outputs
        files = []
        for folder, dirs, names in os.walk(source):
            rel = Path(folder).relative_to(source)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                             and not d.endswith(".egg-info") and not (rel == Path(".") and d in UNTRACKED))
            files += [str(rel / n) if rel != Path(".") else n for n in sorted(names)
                      if (not n.startswith(".") or n in (".gitignore", ".dvcignore")) and not n.endswith(".pyc")]
        return [f for f in files if not f.startswith(SKIP)]
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=source,
                             capture_output=True, text=True, check=True).stdout
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        raise RawdriftError(f"{source}: not a git checkout (the demo copies the files git tracks)") from None
    return [f for f in files if not f.startswith(SKIP) and (source / f).is_file()]


def _env() -> dict:
    """Stages run ``python`` from PATH: this interpreter's folder first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAWDRIFT_WORKERS", "1")
    # one intra-op thread per stage: tiny tensors gain nothing from more, and on a busy CPU the
    # threads' spin-waits cost more than the work (the demo's numbers mean nothing anyway)
    env.setdefault("OMP_NUM_THREADS", "1")
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "DVC_ROOT"):
        env.pop(k, None)
    return env


def sh(args: list[str], cwd: Path, quiet: bool = True) -> str:
    """Run a command in the demo workspace; a failure is a :class:`RawdriftError` with its output."""
    r = subprocess.run(args, cwd=cwd, env=_env(), text=True, capture_output=quiet)
    if r.returncode != 0:
        tail = "\n".join(((r.stdout or "") + (r.stderr or "")).strip().splitlines()[-20:])
        raise RawdriftError(f"{' '.join(args)} failed in {cwd} (exit {r.returncode})" + (f":\n{tail}" if tail else ""))
    return r.stdout or ""


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def create(dest: Path, source: Path = SOURCE, overrides: dict | None = None, params: dict | None = None) -> Path:
    """The scratch workspace: the code, the tiny profile (with ``overrides``) or, when given,
    the whole ``params`` instead, its own git and DVC, one commit."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise RawdriftError(f"{dest}: exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    for f in code_files(source):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / f, dest / f)
    header = "the demo's tiny profile (rawdrift/demo.py)" if params is None else "params given to rawdrift.demo.create"
    (dest / "params.yaml").write_text(f"# rawdrift demo: {header}\n" + yaml.safe_dump(
        profile(source, overrides) if params is None else params, sort_keys=False))
    sh(["git", "init", "-q"], dest)
    sh(["git", "config", "user.name", "rawdrift demo"], dest)
    sh(["git", "config", "user.email", "demo@rawdrift.invalid"], dest)
    sh(dvc("init", "-q"), dest)
    shutil.copy2(source / ".dvc/config", dest / ".dvc/config")
    shutil.copytree(source / ".dvc/plots", dest / ".dvc/plots")
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "rawdrift demo: code and tiny profile"], dest)
    return dest


def repro(dest: Path, quiet: bool = False) -> None:
    """``dvc repro`` of the whole DAG, then a commit of dvc.lock and the results."""
    sh(dvc("repro"), dest, quiet=quiet)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "rawdrift demo: dvc repro"], dest)


def tour(dest: Path) -> str:
    """Where the artifacts are, with what each folder holds."""
    rows = [("data/raw/<dataset>/", "raw stacks, labels / masks, camera (DVC cache, git-ignored)"),
            ("data/views/<dataset>/", "the views (the demo: 3 of the 12)"),
            ("models/<dataset>/<view>/", "fold models (safetensors)"),
            ("metrics/headline/", "the figures `dvc exp show` and `dvc metrics diff` compare"),
            ("metrics/crosseval|corruptions|forensics|optimize|train/", "the detailed results (JSON)"),
            ("metrics/summary.json, metrics/rankings.json", "headline numbers and paper tables 5-9"),
            ("plots/", "figures (PNG), the matrices as data (plots/crosseval/*.csv), curves (plots/train/*.csv)")]
    counts = {p: sum(1 for f in (dest / p).rglob("*") if f.is_file()) for p in ("data", "models", "metrics", "plots")}
    width = max(len(a) for a, _ in rows)
    lines = [f"demo workspace: {dest}",
             "  " + ", ".join(f"{n} files in {p}/" for p, n in counts.items())]
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    lines += ["next, in that folder (with this venv's dvc on PATH):",
              "  dvc exp show                          # headline figures, one row per run",
              "  dvc exp run -S forensics.lambda=1e-3  # reruns forensics@* only",
              "  dvc metrics diff                      # the rows that changed",
              "  dvc plots show                        # dvc_plots/index.html: matrices, curves, figures",
              f"remove it with: rm -rf {dest}"]
    return "\n".join(lines)


def run_demo(dest: Path | None = None, quiet: bool = False, overrides: dict | None = None) -> Path:
    """Create the scratch workspace (``dest`` or a new temporary folder) and run the DAG in it."""
    dest = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="rawdrift-demo-"))
    create(dest, overrides=overrides)
    repro(dest, quiet=quiet)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawdrift.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="build the demo workspace in DIR (new or empty) instead of a temporary folder")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not show dvc repro's output")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="the device param (default: the profile's cpu; auto: cuda when present)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="the precision param (default: the profile's fp32)")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":          # the workspace's params.yaml names the device (rawdrift.runtime)
        from rawdrift.runtime import resolve_device
        device = resolve_device(device).type
    overrides = {k: v for k, v in (("device", device), ("precision", args.precision)) if v}
    start = time.perf_counter()
    try:
        dest = run_demo(args.keep.resolve() if args.keep else None, quiet=args.quiet, overrides=overrides)
    except RawdriftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nrawdrift demo: the whole DAG in {time.perf_counter() - start:.0f} s")
    print(tour(dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
