"""Fan DVC stages out over an engine (Ray, SLURM through submitit, or local processes).

DVC runs one stage at a time per workspace, so every task gets its own git worktree (or clone)
at the driver's commit and runs ``dvc repro`` of one stage there. Results come back only
through DVC, in one of two modes:

* **remote** (several machines; a DVC remote such as S3): the driver runs and pushes the
  upstream stages (``dvc push --run-cache`` and :func:`rawdrift.share.push_run_cache_outputs`
  for the ``cache: false`` outputs); each task runs ``dvc repro --pull <stage>`` in a worktree
  with its own cache and pushes the same way; the driver finishes with ``dvc repro --pull``,
  which finds every fanned-out stage in the run-cache and checks its outputs out.
* **shared cache** (one box, no object storage): every worktree uses the driver's cache
  (``cache.dir`` in its ``.dvc/config.local``), whose ``runs/`` holds the run-cache, so the
  driver's final ``dvc repro`` restores the stages without any push.

A failing task leaves nothing behind: DVC stores outputs and run-cache entries only after the
stage command succeeded, pushes happen only after that (run-cache entries last, after the
outputs they name), and the worktree is removed either way. A crashed task (killed by a signal,
its worker lost) runs again, at most ``--retries`` times; one that exits with an error does not.
Nothing waits for ever: every command gets no stdin, its own process group and what is left of
the task's time limit (``--timeout-min``), past which the group is killed and the task fails.
Credentials are never written: DVC reads them from the environment or ``.dvc/config.local``
(a worktree on the driver's machine gets a symlink to the driver's ``.dvc/config.local``).

Usage: ``python -m rawdrift.fanout [PATTERN ...] [--engine ray|submitit|local] [--gpus N]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rawdrift.errors import RawdriftError
from rawdrift.processes import available_cores
from rawdrift.share import run_cache_entries

ENGINES = ("ray", "submitit", "local")
DEFAULT_PATTERNS = ("train@*",)
RESTORED = "is cached - skipping run"
UNCHANGED = "didn't change, skipping"
TIMED_OUT = 124                    # a task's exit status when it ran past its time limit (as timeout(1))
KILLED = re.compile(r"exited with -\d+")   # DVC's words for a stage command killed by a signal


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task needs: which stage, where the repository is, how results go back.

    Holds no credentials: a task reads them from its machine's environment or the
    ``.dvc/config.local`` that ``config_local`` names."""
    stage: str
    commit: str
    repo: str                      # the driver's repository (worktree) or a URL to clone
    workdir: str                   # parent folder of the task's worktree or clone
    remote: str | None = None      # DVC remote (remote mode) or None (shared-cache mode)
    cache_dir: str | None = None   # the driver's cache (shared-cache mode)
    config_local: str | None = None  # the driver's .dvc/config.local, symlinked into a worktree
    clone: bool = False            # git clone instead of git worktree add
    path: str = ""                 # PATH for the stage commands (the driver's venv first)
    timeout_s: float | None = None  # the whole task's time limit; past it every command is killed
    threads: dict[str, str] = field(default_factory=dict)  # the driver's thread-count variables (THREAD_VARS)


@dataclass
class TaskResult:
    """What one attempt of a task reports back."""
    stage: str
    ok: bool
    returncode: int
    log: str
    seconds: float
    host: str = field(default_factory=lambda: os.uname().nodename)
    attempts: int = 1

    @property
    def crashed(self) -> bool:
        """Killed by a signal (out of memory, preemption) or its worker died: worth another attempt,
        unlike an error exit or a time-out. Covers ``dvc`` itself killed (a negative status) and the
        stage command killed under ``dvc`` (which exits 1 saying ``exited with -9``)."""
        return not self.ok and (self.returncode < 0 or bool(KILLED.search(self.log)))


class CommandTimeout(RawdriftError):
    """A command ran past its time limit and was killed (with everything it started)."""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group: dvc, the stage command it runs and their children."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def sh(cmd: list[str], cwd: str | Path, env: dict[str, str] | None = None,
       check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``check``, a non-zero exit raises :class:`RawdriftError` with its last output line.

    The command reads no stdin (nothing can sit waiting for an answer) and runs in its own process
    group: past ``timeout`` seconds the whole group is killed and :class:`CommandTimeout` raised.
    (``subprocess.run(timeout=...)`` would kill ``dvc`` alone and then wait for the stage command,
    which still holds the output pipes.)"""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:     # a grandchild left the group and holds the pipes
            out, err = "", ""
        last = ((err or "").strip() or (out or "").strip()).splitlines()[-1:]
        raise CommandTimeout(f"{' '.join(cmd[:3])}: no result after {timeout:.0f} s, killed"
                             + (f" (last output: {last[0]})" if last else "")) from None
    except BaseException:                     # KeyboardInterrupt, SystemExit: leave nothing running
        _kill_group(proc)
        proc.wait()
        raise
    r = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and r.returncode != 0:
        lines = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        raise RawdriftError(f"{' '.join(cmd[:3])}: {lines[-1]}")
    return r


def require_clean_tree(root: Path) -> str:
    """The driver's commit; refuses a tree with changes or untracked files (tasks check out the commit)."""
    status = sh(["git", "status", "--porcelain"], root).stdout
    if status.strip():
        first = status.splitlines()[0][3:]
        raise RawdriftError(f"working tree is dirty ({first} ...): commit first, tasks run at the driver's commit")
    return sh(["git", "rev-parse", "HEAD"], root).stdout.strip()


def stage_graph(root: Path) -> dict[str, set[str]]:
    """Every stage name -> the names of the stages it (transitively) depends on."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph           # edges: stage -> the stages it depends on
        return {s.name: {d.name for d in nx.descendants(graph, s)} for s in graph.nodes if s.name}


def match_stages(names: list[str], patterns: list[str]) -> list[str]:
    """Stage names matching any pattern (fnmatch), in the given order; a pattern that matches nothing is an error."""
    for p in patterns:
        if not fnmatch.filter(names, p):
            raise RawdriftError(f"no stage matches {p!r} (stages: {', '.join(sorted(names)[:6])}, ...)")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def upstream_of(graph: dict[str, set[str]], targets: list[str]) -> list[str]:
    """The stages the targets depend on that are not targets themselves."""
    ups = set().union(*(graph[t] for t in targets)) - set(targets)
    return sorted(ups)


def out_of_date(root: Path, stages: list[str], env: dict[str, str]) -> list[str]:
    """The stages among ``stages`` that ``dvc status`` reports as changed."""
    if not stages:
        return []
    r = sh(["dvc", "status", "--json", *stages], root, env)
    changed = json.loads(r.stdout.strip().splitlines()[-1] or "{}")
    return [s for s in stages if s in changed]


def default_remote(root: Path, env: dict[str, str]) -> str | None:
    """The repository's default DVC remote, or None."""
    r = sh(["dvc", "remote", "default"], root, env, check=False)
    name = r.stdout.strip()
    return name if r.returncode == 0 and name and " " not in name else None


def cache_dir(root: Path, env: dict[str, str]) -> str:
    """The driver's DVC cache directory (absolute)."""
    out = sh(["dvc", "cache", "dir"], root, env).stdout.strip().splitlines()[-1]
    return str((root / out).resolve())


def push_results(root: Path, remote: str, env: dict[str, str], timeout: float | None = None) -> None:
    """Upload what the local run-cache names, then the run-cache entries themselves.

    ``python -m rawdrift.share`` first: every output of the stages run here, the ``cache: false``
    ones too (``dvc push`` leaves those behind); then ``dvc push --run-cache``, which uploads
    the entries before its objects, so that a remote entry always finds its outputs there and a
    push killed half-way leaves only content-addressed objects that nothing names."""
    deadline = None if timeout is None else time.monotonic() + timeout
    left = lambda: None if deadline is None else max(1.0, deadline - time.monotonic())  # noqa: E731
    if run_cache_entries(root):         # none when every stage was already up to date
        sh([sys.executable, "-m", "rawdrift.share", "-r", remote], root, env, timeout=left())
    sh(["dvc", "push", "--run-cache", "-r", remote], root, env, timeout=left())


def run_upstream(root: Path, upstream: list[str], remote: str | None, env: dict[str, str],
                 timeout: float | None = None) -> str:
    """Reproduce the upstream stages in the driver, pushing them in remote mode so tasks restore them."""
    if not upstream:
        return ""
    pull = ["--pull"] if remote else []
    out = sh(["dvc", "repro", *pull, *upstream], root, env).stdout
    if remote:
        push_results(root, remote, env, timeout)
    return out


#: Variables that set a CPU stage's intra-op thread count. Torch's float sums depend on it, so a task
#: runs with the driver's values (unset where the driver has them unset): Ray sets
#: ``OMP_NUM_THREADS`` to a task's ``num_cpus``, which would make a fanned-out CPU stage compute other
#: models than the same stage in a plain ``dvc repro``.
THREAD_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def driver_threads() -> dict[str, str]:
    """This process's :data:`THREAD_VARS` that are set, for :attr:`TaskSpec.threads`."""
    return {k: os.environ[k] for k in THREAD_VARS if k in os.environ}


def task_env(spec: TaskSpec) -> dict[str, str]:
    """The task's environment: the engine's (CUDA_VISIBLE_DEVICES, credentials) with the driver's PATH
    first and the driver's thread counts (:data:`THREAD_VARS`); git never prompts (a clone that needs a
    password fails instead of waiting for one)."""
    env = dict(os.environ)
    for k in THREAD_VARS:
        env.pop(k, None)
    env.update(spec.threads)
    if spec.path:
        env["PATH"] = spec.path + os.pathsep + env.get("PATH", "")
    env["GIT_TERMINAL_PROMPT"] = "0"
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "DVC_ROOT"):
        env.pop(k, None)
    return env


def checkout(spec: TaskSpec, dest: Path, env: dict[str, str], timeout: Callable[[], float | None]) -> None:
    """A worktree (or clone) of the driver's commit at ``dest``, with the DVC config it needs."""
    if spec.clone:
        sh(["git", "clone", "-q", "--no-checkout", spec.repo, str(dest)], spec.workdir, env, timeout=timeout())
        sh(["git", "checkout", "-q", "--detach", spec.commit], dest, env, timeout=timeout())
    else:
        sh(["git", "worktree", "add", "-q", "--detach", str(dest), spec.commit], spec.repo, env, timeout=timeout())
    if spec.cache_dir:
        sh(["dvc", "cache", "dir", "--local", spec.cache_dir], dest, env, timeout=timeout())
    elif spec.config_local and not spec.clone:
        (dest / ".dvc" / "config.local").symlink_to(spec.config_local)


def remove_checkout(spec: TaskSpec, dest: Path) -> None:
    """Remove the task's worktree or clone (success or not)."""
    if not spec.clone:
        for cmd in (["git", "worktree", "remove", "--force", str(dest)], ["git", "worktree", "prune"]):
            try:
                sh(cmd, spec.repo, check=False, timeout=120)
            except CommandTimeout:
                pass
    shutil.rmtree(dest, ignore_errors=True)


def run_task(spec: TaskSpec) -> TaskResult:
    """One task: check out the driver's commit, ``dvc repro`` the stage, push on success, clean up.

    Runs on the engine's worker (any machine that sees ``spec.repo`` and ``spec.workdir``). Every
    command shares the task's time limit ``spec.timeout_s``: past it the command is killed and the
    task fails with status :data:`TIMED_OUT`, saying which command hung."""
    start = time.perf_counter()
    deadline = None if spec.timeout_s is None else time.monotonic() + spec.timeout_s
    left = lambda: None if deadline is None else max(1.0, deadline - time.monotonic())  # noqa: E731
    env = task_env(spec)
    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    dest = Path(spec.workdir) / f"{spec.stage.replace('@', '_')}-{uuid.uuid4().hex[:8]}"
    log: list[str] = []
    rc = 0
    try:
        checkout(spec, dest, env, left)
        pull = ["--pull"] if spec.remote else []
        r = sh(["dvc", "repro", *pull, spec.stage], dest, env, check=False, timeout=left())
        rc = r.returncode
        log.append(r.stdout + r.stderr)
        if rc == 0 and spec.remote:
            push_results(dest, spec.remote, env, left())
    except CommandTimeout as e:
        log.append(f"error: task time limit ({spec.timeout_s:.0f} s): {e}")
        rc = TIMED_OUT
    except RawdriftError as e:
        log.append(f"error: {e}")
        rc = rc or 1
    finally:
        remove_checkout(spec, dest)
    return TaskResult(spec.stage, rc == 0, rc, "\n".join(log), time.perf_counter() - start)


def crash_result(stage: str, error: BaseException) -> TaskResult:
    """The result of a task whose worker died (the engine raised instead of returning)."""
    return TaskResult(stage, False, -1, f"task crashed: {type(error).__name__}: {error}", 0.0)


def run_local(specs: list[TaskSpec], jobs: int = 1) -> list[TaskResult]:
    """Tasks in this process's threads (each runs ``dvc`` in a subprocess), ``jobs`` at a time."""
    def guarded(spec: TaskSpec) -> TaskResult:
        try:
            return run_task(spec)
        except Exception as e:       # noqa: BLE001  (a crash is a result, reported by name)
            return crash_result(spec.stage, e)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(guarded, specs))


def ray_init(address: str | None) -> None:
    """Connect to ``address`` (None: RAY_ADDRESS or a new local cluster) unless ``ray.init`` ran already."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


def ray_check_gpus(gpus: float) -> None:
    """Refuse ``gpus`` per task that the Ray cluster cannot give any task: Ray would queue it for ever."""
    import ray

    total = ray.cluster_resources().get("GPU", 0)
    if gpus > 0 and total < gpus:
        raise RawdriftError(f"--gpus {gpus:g}: the Ray cluster has {total:g} GPU(s); "
                            "no task could start (--gpus 0 runs on CPUs)")


def ray_cpus_per_stage() -> float:
    """CPUs a CPU stage asks Ray for: the cores this process may use (:func:`rawdrift.processes.available_cores`),
    at most the largest node's CPUs."""
    import ray

    largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return float(max(1.0, min(available_cores(), largest)))


def run_ray(specs: list[TaskSpec], gpus: float, cpus: float = 1, address: str | None = None) -> list[TaskResult]:
    """Tasks as Ray tasks with ``num_gpus=gpus`` (fractions pack several stages on one GPU) and
    ``num_cpus=cpus`` (a node runs as many at once as its CPUs allow); Ray sets
    ``CUDA_VISIBLE_DEVICES`` per task. No retries here: a task whose worker died comes back as a crash,
    which :func:`run_with_retries` submits again like any other. The task's time limit is enforced on
    the worker (:func:`run_task`), which reports back even when a command hangs."""
    import ray

    ray_init(address)
    remote_task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=0)(run_task)
    refs = [remote_task.remote(s) for s in specs]
    results = []
    for spec, ref in zip(specs, refs):
        try:
            results.append(ray.get(ref))
        except Exception as e:       # noqa: BLE001  (WorkerCrashedError, a node lost)
            results.append(crash_result(spec.stage, e))
    return results


def run_submitit(specs: list[TaskSpec], gpus: float, folder: Path, cluster: str | None = None,
                 timeout_min: float = 240, partition: str | None = None, parallelism: int = 32) -> list[TaskResult]:
    """Tasks as one SLURM job array (``cluster`` None or ``slurm``) or submitit's local processes (``local``).
    The job's time limit is the task's plus 5 minutes, so the task reports its own time-out first."""
    import submitit                  # its AutoExecutor needs pkg_resources: pick the executor here

    job_min = int(math.ceil(timeout_min)) + 5
    if cluster == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=job_min, gpus_per_node=max(0, int(round(gpus))))
    elif cluster in (None, "slurm"):
        executor = submitit.SlurmExecutor(folder=str(folder))
        params: dict = {"time": job_min, "array_parallelism": parallelism, "job_name": "rawdrift-fanout"}
        if gpus:
            params["gpus_per_node"] = max(1, int(round(gpus)))
        if partition:
            params["partition"] = partition
        executor.update_parameters(**params)
    else:
        raise RawdriftError(f"unknown submitit cluster {cluster!r} (slurm or local)")
    jobs = executor.map_array(run_task, specs)
    results = []
    for spec, job in zip(specs, jobs):
        try:
            results.append(job.result())
        except Exception as e:       # noqa: BLE001  (FailedJobError, UncompletedJobError: the job died)
            results.append(crash_result(spec.stage, e))
    return results


def run_with_retries(specs: list[TaskSpec], runner: Callable[[list[TaskSpec]], list[TaskResult]],
                     retries: int) -> list[TaskResult]:
    """Run the tasks, then again those that crashed (not those that failed with an error or timed out),
    at most ``retries`` times more: a task runs at most ``1 + retries`` times."""
    results = {r.stage: r for r in runner(specs)}
    for attempt in range(2, retries + 2):
        again = [s for s in specs if results[s.stage].crashed]
        if not again:
            break
        for r in runner(again):
            r.attempts = attempt
            results[r.stage] = r
    return [results[s.stage] for s in specs]


def finish(root: Path, stages: list[str] | None, remote: str | None, env: dict[str, str]) -> str:
    """The driver's closing ``dvc repro [--pull]`` (of ``stages``, or everything with None); its output."""
    pull = ["--pull"] if remote else []
    r = sh(["dvc", "repro", *pull, *(stages or [])], root, env, check=False)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise RawdriftError(f"dvc repro: {out.strip().splitlines()[-1] if out.strip() else r.returncode}")
    return out


def rerun_in_driver(output: str, stages: list[str]) -> list[str]:
    """Fanned-out stages that the driver's ``dvc repro`` ran instead of restoring."""
    return [s for s in stages if f"Running stage '{s}'" in output]


@dataclass
class FanoutReport:
    """What a fan-out did."""
    targets: list[str]
    upstream: list[str]
    results: list[TaskResult]
    finish_output: str = ""
    rerun: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.stage for r in self.results if not r.ok]


def fanout(root: str | Path = ".", patterns: list[str] | tuple[str, ...] = DEFAULT_PATTERNS,
           engine: str = "ray", gpus: float | None = None, remote: str | None = None,
           shared_cache: bool = False, retries: int = 1, jobs: int = 1, workdir: str | Path | None = None,
           clone_url: str | None = None, finish_all: bool = True, ray_address: str | None = None,
           submitit_cluster: str | None = None, slurm_partition: str | None = None,
           timeout_min: float = 240, cpus: float | None = None,
           log: Callable[[str], None] = print) -> FanoutReport:
    """The whole fan-out: checks, upstream, tasks, closing ``dvc repro``. See the module docstring.

    ``timeout_min`` limits each task (and each of the driver's pushes): a task past it is killed
    and reported as failed, so a hung ``dvc push`` ends the run instead of stalling it. ``cpus``:
    Ray CPUs per task (default: 1 with GPUs; without, all of this machine's, one CPU stage at a time
    per node, since a CPU stage uses every core and two would only fight over them)."""
    if engine not in ENGINES:
        raise RawdriftError(f"unknown engine {engine!r} (one of: {', '.join(ENGINES)})")
    if gpus is not None and (gpus < 0 or (engine != "ray" and gpus != int(gpus))):
        raise RawdriftError(f"--gpus {gpus:g}: a non-negative number, whole unless --engine ray")
    if retries < 0 or jobs < 1 or not timeout_min > 0 or (cpus is not None and not cpus > 0):
        raise RawdriftError("--retries must be >= 0, --jobs >= 1, --timeout-min > 0 and --cpus > 0")
    root = Path(root).resolve()
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    timeout_s = 60.0 * timeout_min
    commit = require_clean_tree(root)
    graph = stage_graph(root)
    targets = match_stages(list(graph), list(patterns))
    if shared_cache:
        remote = None
    else:
        remote = remote or default_remote(root, env)
    n_gpus = gpus if gpus is not None else 0.0
    if engine == "ray":                  # before any work: connect, and refuse GPUs the cluster lacks
        ray_init(ray_address)
        if gpus is None:
            import ray
            n_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        ray_check_gpus(n_gpus)
    upstream = upstream_of(graph, targets)
    log(f"fanout: {len(targets)} stage(s) match, upstream {', '.join(upstream) or 'none'}; "
        f"{'remote ' + remote if remote else 'shared cache'}; engine {engine}")
    run_upstream(root, upstream, remote, env, timeout_s)
    todo = out_of_date(root, targets, env)
    log(f"fanout: {len(todo)} out of date: {', '.join(todo) or 'none'}")
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rawdrift-fanout-"))
    base.mkdir(parents=True, exist_ok=True)
    config_local = root / ".dvc" / "config.local"
    specs = [TaskSpec(stage=s, commit=commit, repo=clone_url or str(root), workdir=str(base / "tasks"),
                      remote=remote, cache_dir=None if remote else cache_dir(root, env),
                      config_local=str(config_local) if config_local.exists() else None,
                      clone=bool(clone_url), path=venv_bin, timeout_s=timeout_s, threads=driver_threads())
             for s in todo]
    runner: Callable[[list[TaskSpec]], list[TaskResult]]
    if engine == "ray":
        n_cpus = cpus if cpus is not None else (1.0 if n_gpus > 0 else ray_cpus_per_stage())
        runner = lambda ss: run_ray(ss, n_gpus, n_cpus, address=ray_address)  # noqa: E731
    elif engine == "submitit":
        runner = lambda ss: run_submitit(ss, n_gpus, base / "submitit", submitit_cluster,  # noqa: E731
                                         timeout_min, slurm_partition)
    else:
        runner = lambda ss: run_local(ss, jobs)  # noqa: E731
    try:
        results = run_with_retries(specs, runner, retries) if specs else []
    finally:
        if not workdir:
            shutil.rmtree(base, ignore_errors=True)
    for r in results:
        again = f", attempt {r.attempts}" if r.attempts > 1 else ""
        log(f"fanout: {r.stage}: {'ok' if r.ok else 'FAILED'} on {r.host} [{r.seconds:.1f} s{again}]")
    report = FanoutReport(targets, upstream, results)
    for r in results:
        if not r.ok:
            tail = "\n".join(r.log.strip().splitlines()[-5:])
            log(f"fanout: {r.stage} failed (exit {r.returncode}):\n{tail}")
    if report.failed:                    # restore what succeeded; never run a failed stage in the driver
        closing: list[str] | None = [t for t in targets if t not in report.failed]
    else:
        closing = None if finish_all else targets
    if closing is None or closing:
        report.finish_output = finish(root, closing, remote, env)
        report.rerun = rerun_in_driver(report.finish_output, [r.stage for r in results if r.ok])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawdrift.fanout", description=__doc__.split("\n\n")[0],
                                     epilog="See docs/fanout.md.")
    parser.add_argument("patterns", nargs="*", default=list(DEFAULT_PATTERNS),
                        help="stage name patterns (fnmatch; default: train@*), e.g. 'optimize@*' 'forensics@*'")
    parser.add_argument("--engine", default="ray", help="ray (default), submitit (SLURM) or local")
    parser.add_argument("--gpus", type=float, default=None,
                        help="GPUs per stage (fractions on Ray, e.g. 0.25 packs four; default: 1 if the "
                             "Ray cluster has GPUs, else 0)")
    parser.add_argument("-r", "--remote", help="DVC remote for results and run-cache (default: the default remote)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="one box, no remote: worktrees share this repository's DVC cache")
    parser.add_argument("--retries", type=int, default=1,
                        help="attempts more for a crashed task: killed by a signal, or its worker died (default 1)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="--engine local: tasks at a time (default 1)")
    parser.add_argument("--workdir", help="where task worktrees go (default: a temporary folder; on SLURM a "
                                          "shared filesystem)")
    parser.add_argument("--clone", metavar="URL", help="tasks git-clone URL instead of adding worktrees "
                                                       "(machines that do not see this repository)")
    parser.add_argument("--only", action="store_true",
                        help="finish with dvc repro of the matched stages only (default: the whole pipeline)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")
    parser.add_argument("--cluster", help="submitit cluster: slurm (default) or local (processes on this machine)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--cpus", type=float, default=None,
                        help="Ray CPUs per stage (default: 1 with GPUs, else all of this machine's: a CPU "
                             "stage uses every core)")
    parser.add_argument("--timeout-min", type=float, default=240,
                        help="time limit per task in minutes, every engine (default 240): a task past it is "
                             "killed and reported as failed; on SLURM the job gets 5 minutes more")
    args = parser.parse_args(argv)
    try:
        report = fanout(".", args.patterns, args.engine, args.gpus, args.remote, args.shared_cache, args.retries,
                        args.jobs, args.workdir, args.clone, not args.only, args.address, args.cluster,
                        args.partition, args.timeout_min, args.cpus)
    except RawdriftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
    restored = [r.stage for r in report.results if r.ok and r.stage not in report.rerun]
    print(f"fanout: {len(restored)} stage(s) fanned out and restored, {len(report.failed)} failed")
    if report.rerun:
        print(f"error: the driver reran {', '.join(report.rerun)} instead of restoring it", file=sys.stderr)
        return 1
    if report.failed:
        print(f"error: stage(s) failed: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
