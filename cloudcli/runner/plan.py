"""What `dvc repro` would run, as DVC itself plans it: the stages of the targets and everything
upstream, in DVC's order, with the edges between them.

DVC decides a stage's fate when it reaches it: it runs if its deps, params, command or outputs
changed since dvc.lock, which after an upstream stage ran is usually the case. `dvc repro --dry`
runs nothing, so it lists only the stages changed now; `stale()` gives that same list, and
`cloudcli run` asks each stage again once everything upstream of it has finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cloudcli.errors import CloudcliError


@dataclass(frozen=True)
class Step:
    """One pipeline stage: its name (train@seg1-0), command, working folder and the outputs DVC
    would remove before running it (not persist)."""

    name: str
    cmd: str
    wdir: Path
    outs: tuple[Path, ...] = ()
    upstream: tuple[str, ...] = ()  # stages of the plan it depends on


@dataclass
class Plan:
    root: Path
    steps: list[Step] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # data .dvc files upstream (data.dvc): saved, not run

    def waves(self, names: list[str]) -> list[list[str]]:
        """`names` (stages of the plan) grouped by depth: a stage's wave follows all of its
        upstream stages' among `names`."""
        depth: dict[str, int] = {}
        chosen = set(names)
        for step in self.steps:  # DVC's order: upstream first
            if step.name in chosen:
                depth[step.name] = 1 + max((depth[u] for u in step.upstream if u in depth), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name, d in depth.items():
            waves[d].append(name)
        return waves

    def downstream(self, names: list[str]) -> list[str]:
        """The stages of the plan downstream of any of `names` (not among them), in order."""
        hit = set(names)
        found = []
        for step in self.steps:
            if step.name not in hit and any(u in hit for u in step.upstream):
                hit.add(step.name)
                found.append(step.name)
        return found


def open_repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise CloudcliError(f"{root}: not a DVC repository (run `dvc init` there, or cd into one)") from None


def plan(root: Path, targets: list[str]) -> Plan:
    """The stages `dvc repro TARGETS` considers, in its order (every stage of dvc.yaml by default)."""
    from dvc.exceptions import DvcException
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    repo = open_repo(root)
    try:
        stages = collect_stages(repo, targets or ["dvc.yaml"], recursive=False, glob=False)
        graph = get_active_graph(repo.index.graph)
        ordered = plan_repro(graph, stages)
    except DvcException as e:
        raise CloudcliError(f"dvc: {e} (targets: {' '.join(targets) or 'dvc.yaml'})") from None
    finally:
        repo.close()
    names = {s.addressing for s in ordered if getattr(s, "cmd", None)}
    sources = [s.addressing for s in ordered if s.is_data_source and not s.frozen]
    steps = []
    for stage in ordered:
        if stage.addressing not in names or stage.frozen:
            continue  # data .dvc files and frozen stages: dvc repro runs neither
        outs = tuple(Path(o.fs_path) for o in stage.outs if not o.persist)
        upstream = tuple(s.addressing for s in graph.successors(stage) if s.addressing in names)
        cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
        steps.append(Step(stage.addressing, cmd, Path(stage.wdir), outs, upstream))
    return Plan(root, steps, sources)


def save_sources(root: Path, names: list[str]) -> list[str]:
    """Save the data .dvc files among `names` whose data changed or is not in the DVC cache yet,
    as `dvc repro` does before it runs anything (`dvc commit -f`); the ones saved."""
    repo = open_repo(root)
    try:
        by_name = {s.addressing: s for s in repo.index.stages}
        with repo.lock:
            changed = [n for n in names if by_name[n].changed()]
        for name in changed:
            repo.commit(name, force=True)
        return changed
    finally:
        repo.close()


def stale(root: Path, names: list[str]) -> list[str]:
    """Which of `names` DVC would run now (deps, params, command or outputs changed), in order:
    the list `dvc repro --dry` prints."""
    repo = open_repo(root)
    try:
        by_name = {s.addressing: s for s in repo.index.stages}
        with repo.lock:
            return [n for n in names if by_name[n].changed()]
    finally:
        repo.close()


def commit(root: Path, name: str) -> None:
    """Record a stage that ran in dvc.lock and save its outputs to the DVC cache (`dvc commit -f`)."""
    repo = open_repo(root)
    try:
        repo.commit(name, force=True)
    finally:
        repo.close()


def remote_of(root: Path) -> tuple[str, dict] | None:
    """The default DVC remote: its name and settings (None when there is none)."""
    repo = open_repo(root)
    try:
        name = repo.config["core"].get("remote")
        if not name or name not in repo.config["remote"]:
            return None
        return name, {
            k: v if isinstance(v, bool | int | float) else str(v) for k, v in repo.config["remote"][name].items()
        }
    finally:
        repo.close()


def holder(outs, path: str):
    """The DVC output among `outs` that `path` (a file system path) is or lies in; None if none."""
    return next((o for o in outs if o.fs.isin_or_eq(path, o.fs_path)), None)


def push_inputs(root: Path, name: str, remote: str) -> int:
    """Push to `remote` the DVC-tracked data stage `name` reads (the outputs, and .dvc-tracked
    data, its deps lie in), so a worker elsewhere can pull them; the number of files sent."""
    repo = open_repo(root)
    try:
        stage = next(s for s in repo.index.stages if s.addressing == name)
        outs = [o for o in repo.index.outs if o.use_cache]
        held = [holder(outs, d.fs_path) for d in stage.deps]
        targets = {str(Path(o.fs_path).relative_to(root)) for o in held if o is not None}
        return repo.push(targets=sorted(targets), remote=remote) if targets else 0
    finally:
        repo.close()


def restore(root: Path, name: str, remote: str) -> None:
    """Bring a stage that ran elsewhere into this repository through DVC's run-cache, as
    `dvc repro --pull` would: its run-cache entry and outputs from `remote`, the outputs checked
    out, dvc.lock updated. Nothing runs here: a stage the remote does not hold is an error."""
    import logging

    from dvc.stage.cache import RunCacheNotFoundError

    repo = open_repo(root)
    logging.getLogger("dvc").setLevel(logging.WARNING)  # not DVC's "Stage is cached" and lock-file lines
    try:
        with repo.lock:
            repo.stage_cache.pull(remote)
            stage = next(s for s in repo.index.stages if s.addressing == name)
            try:
                repo.stage_cache.restore(stage, pull=True)
            except RunCacheNotFoundError:
                raise CloudcliError(
                    f"stage {name} ran on the cluster, but DVC remote '{remote}' holds no run of it with "
                    "these inputs: do the workers use the same remote (dvc remote list)?"
                ) from None
            stage.save(run_cache=False)
            stage.commit()
            stage.dump(update_pipeline=False)
    finally:
        repo.close()
