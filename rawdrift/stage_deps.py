"""A stage's code dependencies, derived: the import closure of its script over ``rawdrift``.

DVC reruns a stage only when one of its ``deps`` changes, so the code deps must name every
module the stage can run. They are computed, not listed by hand: a static walk of every
``import`` / ``from ... import`` statement (function-local ones included, since a lazy import
runs too) of the script, then of each ``rawdrift`` module it reaches, with the package
``__init__`` files that importing a submodule executes.

Usage (from the repository root)::

    python -m rawdrift.stage_deps            # print each stage's closure
    python -m rawdrift.stage_deps --check    # exit 1 when dvc.yaml's code deps differ
    python -m rawdrift.stage_deps --write    # rewrite the code deps of every stage in dvc.yaml

``--write`` regenerates the code deps from scratch (the ``stages/`` and ``rawdrift/`` entries
of each stage's ``deps``) and keeps the data deps, their order, comments and layout.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

PACKAGE = "rawdrift"
CODE_PREFIXES = ("stages/", f"{PACKAGE}/")
_CMD = re.compile(r"^python\s+((?:\.\./)*)(stages/[\w/]+\.py)\b")
#: Pipeline files, relative to the root: the project's and each study's (``studies/<name>/dvc.yaml``,
#: whose stages run from their own folder and name code as ``../../stages/...``).
PIPELINES: tuple[str, ...] = ("dvc.yaml", "studies/*/dvc.yaml")


def pipeline_files(root: str | Path = ".") -> list[Path]:
    """The pipeline files under ``root`` (relative paths), the project's first."""
    root = Path(root)
    return [p.relative_to(root) for pattern in PIPELINES for p in sorted(root.glob(pattern))]


def _prefix(dvcfile: Path) -> str:
    """How a pipeline file's stages reach the root: '' for dvc.yaml, '../../' for studies/x/dvc.yaml."""
    return "../" * len(Path(dvcfile).parent.parts)


def module_file(root: Path, module: str) -> Path | None:
    """``rawdrift.isp.static`` -> ``rawdrift/isp/static.py`` (or ``.../__init__.py``) under
    ``root``, relative to it; None when no such module file exists."""
    rel = Path(*module.split("."))
    for cand in (rel.with_suffix(".py"), rel / "__init__.py"):
        if (root / cand).is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    """``rawdrift/isp/static.py`` -> ``rawdrift.isp.static``; ``rawdrift/isp/__init__.py`` -> ``rawdrift.isp``."""
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str | None = None, is_package: bool = False) -> set[str]:
    """Every module name an ``import`` statement anywhere in ``source`` can load, including
    the parent packages (``import a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``) and, for
    ``from a.b import x``, the candidate submodule ``a.b.x``. Relative imports are resolved
    against ``module`` (the dotted name of the file; ``is_package`` for an ``__init__``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def closure(root: str | Path, script: str | Path, package: str = PACKAGE) -> list[str]:
    """Sorted repository-relative paths of the ``package`` modules ``script`` can import,
    directly or through each other (function-local imports included)."""
    root = Path(root)
    seen: set[Path] = set()
    todo: list[tuple[Path, str | None]] = [(Path(script), None)]
    while todo:
        path, module = todo.pop()
        source = (root / path).read_text()
        is_package = path.name == "__init__.py"
        for name in imported_modules(source, module, is_package):
            if name != package and not name.startswith(package + "."):
                continue
            found = module_file(root, name)
            if found is not None and found not in seen:
                seen.add(found)
                todo.append((found, _module_name(found)))
    return sorted(p.as_posix() for p in seen)


def stage_script(cmd: str) -> str | None:
    """``python stages/train.py ${item.dataset} ...`` -> ``stages/train.py`` (relative to the root,
    also for ``python ../../stages/x.py`` from a study's folder); None for other commands."""
    m = _CMD.match(cmd.strip())
    return m.group(2) if m else None


def _is_code(dep: str, prefix: str) -> bool:
    return dep.startswith(prefix) and dep[len(prefix):].startswith(CODE_PREFIXES)


def _stage_bodies(doc) -> list[tuple[str, dict]]:
    """(name, body) of every stage in a parsed dvc.yaml; foreach stages give their ``do`` body."""
    out = []
    for name, stage in doc.get("stages", {}).items():
        body = stage["do"] if "do" in stage else stage
        out.append((name, body))
    return out


def code_deps(root: str | Path, script: str) -> list[str]:
    """What a stage running ``script`` must list: the script, then its closure."""
    return [script, *closure(root, script)]


def expected_deps(root: str | Path, deps: list[str], script: str, prefix: str = "") -> list[str]:
    """``deps`` with its code entries replaced by the script's code deps (data deps kept, in order);
    ``prefix`` leads from the pipeline file's folder to the root (``../../`` for a study)."""
    data = [d for d in deps if not _is_code(str(d), prefix)]
    return [*(prefix + d for d in code_deps(root, script)), *data]


def stale_stages(root: str | Path = ".") -> dict[str, tuple[list[str], list[str]]]:
    """Stages of every pipeline file whose code deps differ from the derived ones:
    name (``studies/x/dvc.yaml:stage`` outside the root's dvc.yaml) -> (missing, extra) code deps."""
    import yaml
    root = Path(root)
    out = {}
    for dvcfile in pipeline_files(root):
        prefix = _prefix(dvcfile)
        doc = yaml.safe_load((root / dvcfile).read_text())
        for name, body in _stage_bodies(doc):
            script = stage_script(body.get("cmd", ""))
            if script is None:
                continue
            have = [str(d) for d in body.get("deps", []) if _is_code(str(d), prefix)]
            want = [prefix + d for d in code_deps(root, script)]
            if have != want:
                key = name if str(dvcfile) == "dvc.yaml" else f"{dvcfile}:{name}"
                out[key] = (sorted(set(want) - set(have)), sorted(set(have) - set(want)))
    return out


def write_deps(root: str | Path = ".") -> list[str]:
    """Rewrite the code deps of every stage of every pipeline file (round-trip YAML: comments,
    flow lists and layout stay); returns the names of the stages that changed."""
    root = Path(root)
    changed = []
    for dvcfile in pipeline_files(root):
        names = _write_file_deps(root, dvcfile)
        changed += [n if str(dvcfile) == "dvc.yaml" else f"{dvcfile}:{n}" for n in names]
    return changed


def _write_file_deps(root: Path, dvcfile: Path) -> list[str]:
    from ruamel.yaml import YAML
    path = root / dvcfile
    prefix = _prefix(dvcfile)
    yml = YAML()
    yml.preserve_quotes = True
    yml.width = 4096
    yml.indent(mapping=2, sequence=4, offset=2)
    doc = yml.load(path.read_text())
    changed = []
    for name, body in _stage_bodies(doc):
        script = stage_script(body.get("cmd", ""))
        if script is None:
            continue
        deps = body.get("deps")
        have = [str(d) for d in deps] if deps is not None else []
        want = expected_deps(root, have, script, prefix)
        if have != want:
            if deps is None:
                body.insert(list(body).index("cmd") + 1, "deps", want)   # a new stage: deps after cmd
            else:
                deps[:] = want
            changed.append(name)
    if changed:
        with open(path, "w") as f:
            yml.dump(doc, f)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rawdrift.stage_deps", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps differ from the closures")
    mode.add_argument("--write", action="store_true", help="rewrite the code deps of every stage in dvc.yaml")
    ap.add_argument("--root", default=".", help="repository root (default: the current directory)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if args.write:
        changed = write_deps(root)
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: code deps up to date")
        return 0
    if args.check:
        stale = stale_stages(root)
        for name, (missing, extra) in stale.items():
            print(f"{name}: missing {missing or '-'}; not imported {extra or '-'}", file=sys.stderr)
        if stale:
            print("run `python -m rawdrift.stage_deps --write`", file=sys.stderr)
        return 1 if stale else 0
    import yaml
    scripts = {stage_script(b.get("cmd", "")) for f in pipeline_files(root)
               for _, b in _stage_bodies(yaml.safe_load((root / f).read_text()))}
    for script in sorted(s for s in scripts if s):
        files = closure(root, script)
        print(f"{script}: {len(files)} modules: {' '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
