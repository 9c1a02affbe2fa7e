"""Ray Tune adapter: one Tune trial per grid point, a resume state per epoch, MLflow logging on the driver.

Where logging happens: on the driver, from the results the trials report (a Tune Callback).
Why: workers on other nodes need no route to the tracking store or credentials for it; a sqlite
store gets exactly one writer (no "database is locked" with many concurrent trials); and a trial
that dies mid-way cannot leave a half-logged run behind, since the driver marks it FAILED.

Resumability: every trial keeps its latest state at <storage>/<experiment>/resume/<grid_key>/state.pt,
written once per epoch, and every start of a trial resumes from it: a retry within a sweep (Ray's
FailureConfig restarts a crashed trial, or one whose node died, on any node that sees the storage
path) and a new sweep after the driver was killed (re-running the same command). The file is removed
once the run is FINISHED. Ray gets no per-epoch checkpoint: it would write the same state a second
time to the same storage path, which is what saturates first at scale (docs/scale.md). Its one
checkpoint per trial carries the final artifacts to the driver.
Training reseeds per epoch (train.epoch_seed), so a resumed trial gives the same numbers.

Reports: each carries only the epochs its process has not reported yet: the first one every epoch of
its resume state too (a new driver's run, or a retried trial's driver, may lack any of them: the
callback logs each epoch it has not logged, once), every later one the new epoch alone. So a report's
size, and the driver's work per epoch, do not grow with the epochs trained; Tune keeps each trial's
last result in its experiment state, rewritten at every snapshot (docs/scale.md).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Before ray is imported: no usage reporting; no per-trial result.json/CSV/TensorBoard files (MLflow
# is the record); our callback prints progress instead of Ray's tables; a report every epoch (and the
# experiment snapshots it brings) is the design, not a misconfiguration to warn about.
for _k, _v in (("RAY_USAGE_STATS_ENABLED", "0"), ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),
               ("RAY_AIR_NEW_OUTPUT", "0"), ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")):
    os.environ.setdefault(_k, _v)

import ray  # noqa: E402
import torch  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

from . import collapse, dense, tracking  # noqa: E402
from .config import TrialConfig, from_dict  # noqa: E402
from .data import Arrays  # noqa: E402
from .evaluate.ood import PARTNER  # noqa: E402
from .fpmode import flush_denormals  # noqa: E402
from .preflight import PreflightError  # noqa: E402
from .prune import level_tag  # noqa: E402
from .trial import run_trial, write_artifacts  # noqa: E402

STATE = "state.pt"


def resume_dir(storage: str | Path, experiment: str, key: str) -> Path:
    return Path(storage) / experiment / "resume" / key


def _load_state(path: Path) -> dict | None:
    # map to CPU: a state saved on a GPU node must load on any node; run_trial moves it to its device
    return torch.load(path, weights_only=True, map_location="cpu") if path.is_file() else None


def _latest_state(rdir: Path) -> dict | None:
    """The trial's resume state, if any; a state of another grid point (its grid_key differs: e.g. a
    folder copied by hand) is never used."""
    state = _load_state(rdir / STATE)
    return state if state is not None and state.get("grid_key") == rdir.name else None


def save_state(state: dict, rdir: Path, epoch: int) -> None:
    """Replace the resume state in `rdir` atomically: written to a temporary file, then renamed over the
    previous one, so a kill or a failed write (a full disk) leaves the previous epoch's state whole.
    Serialised in memory first: torch's own file writer reports a full disk as "unexpected pos", a write
    of bytes as the OSError it is. A failed write removes its temporary file (on a full disk it holds the
    space the next try needs) and says in one line where, why, and what to do."""
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = rdir / f".{STATE}.tmp"
    try:
        with open(tmp, "wb") as f:  # closed inside the try: NFS reports ENOSPC / EDQUOT at close
            f.write(buf.getbuffer())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"{e.strerror}: the resume state of epoch {epoch} could not be written to {rdir} "
                      f"({shutil.disk_usage(rdir).free} bytes free); the previous epoch's state is kept: free space "
                      "on the storage path and run the same command again") from None
    os.replace(tmp, rdir / STATE)


def trainable(config: dict, arrays: dict[str, Arrays]) -> None:
    """A Tune function trainable: one grid point, reporting every epoch and the final metrics."""
    flushed = flush_denormals()  # before anything starts torch's thread pool (suite/fpmode.py)
    cfg = from_dict(config["trial"])
    torch.set_num_threads(int(config["threads"]))
    rdir = Path(config["resume_root"]) / cfg.grid_key()
    rdir.mkdir(parents=True, exist_ok=True)

    own = _latest_state(rdir)
    resume = own or dense.start_state(cfg, Path(config["dense_root"]))
    resumed_from = len(resume["history"]) if resume else 0
    shared = "" if own or resume is None else resume["dense"]["from"]  # the run whose dense net it starts from
    node = ray.get_runtime_context().get_node_id()  # which machine trains it (a retry may move it)
    until = config["until"]
    sent = 0  # epochs of the training history this process has reported (retraining epochs are not logged)

    def report(epoch: int, history: list[dict], checkpoint: tune.Checkpoint | None = None, **extra) -> None:
        nonlocal sent
        new, sent = history[sent:], len(history)
        tune.report({"epoch": epoch, "new_epochs": new, "resumed_from": resumed_from, "dense_from": shared, "node_id": node,
                     **extra},
                    checkpoint=checkpoint)

    if until is not None and resumed_from >= until:  # already at its rung (the driver stopped before deciding)
        report(resumed_from, resume["history"])
        return

    def on_epoch(log: dict, state) -> None:
        s = state()
        save_state(s, rdir, log["epoch"])
        report(log["epoch"], s["history"])

    partner = arrays.get(PARTNER[cfg.dataset]) if config["evaluate"] else None  # a search gets no test images
    result = run_trial(cfg, on_epoch, arrays=arrays[cfg.dataset], resume=resume, evaluate=config["evaluate"],
                       ood_images=None if partner is None else partner.x_test)
    result.info["node_id"] = node
    result.info["denormals_flushed"] = str(flushed).lower()
    with tempfile.TemporaryDirectory() as d:
        write_artifacts(result, Path(d))
        # one string, not a dict: Tune keeps statistics (max, min, means) of every number in a result, nested
        # dicts flattened, for each trial in its experiment state; the final metrics need none of that.
        # default=float: a metric may be a numpy or 0-d torch scalar (finish_run logs float(v) either way)
        final = {"metrics": result.metrics, "info": result.info, "val_acc": result.history[-1]["val_acc"]}
        report(cfg.epochs, result.history, tune.Checkpoint.from_directory(d), final=json.dumps(final, default=float))


@dataclass(frozen=True)
class Resources:
    """What each trial gets, and how many run at once."""

    cpus: float
    gpus: float
    max_concurrent: int | None


@dataclass(frozen=True)
class Setup:
    """What the driver's steps established, the same for every sweep of a job: the MLflow client and
    the experiment the runs go to, the storage path (Ray's folders and the resume states), what each
    trial gets, and the datasets (loaded once, shared through Ray's object store)."""

    client: MlflowClient
    exp_id: str
    storage: Path
    res: Resources
    arrays: dict[str, Arrays]


@dataclass
class Row:
    """One line of the end-of-sweep summary."""

    key: str
    name: str
    status: str
    run_id: str
    acc0: float | None = None
    acc_max: float | None = None
    wall_s: float | None = None
    resumed_from: int = 0          # epochs restored from a checkpoint (0 = trained from scratch)
    nodes: set[str] = field(default_factory=set)  # Ray node ids that ran it (two after a node loss)


class TrackingStoreLost(PreflightError):
    """The tracking store failed mid-sweep: a server that stopped answering past the retries of MLflow's
    HTTP client (7 with exponential backoff, about 4 minutes, by default), or a store that could not be
    written. The driver ends with this one line: what was trained is in the resume states, and the next
    start marks the runs left RUNNING as KILLED, so the same command resumes."""


def _store_error(e: BaseException | None) -> MlflowException | None:
    """The tracking store's failure behind an exception out of Tune (a callback's error reaches fit() as a
    TuneError raised while handling it, i.e. as its context), if that is what it is. Not a server's answer
    (RestException: it refused a request), which running again would not mend."""
    while e is not None and not isinstance(e, MlflowException):
        e = e.__cause__ or e.__context__
    return None if isinstance(e, RestException) else e


def last_error(trial) -> str:
    """The last line of the trial's latest failure (exception type and message), read from Tune's error
    file on the driver's machine."""
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines()
    except (TypeError, OSError):  # no error file (None), or it could not be read
        return "no error recorded"
    return lines[-1] if lines else "no error recorded"


class SweepCallback(tune.Callback):
    """Logs every trial to MLflow and prints compact progress (started / epochs / finished / ETA).
    One MLflow run per grid point, kept across the rounds of a search (successive halving runs a
    recipe rung by rung, as one Tune trial per round)."""

    def __init__(self, setup: Setup, trials: list[TrialConfig], experiment: str, tags: Mapping[str, str],
                 select: str | None = None):
        self.client, self.exp_id, self.storage = setup.client, setup.exp_id, setup.storage
        self.experiment, self.select = experiment, select  # the resume-state folder; a search's metric
        self.tags = {**tracking.repro_tags(), **tags}
        self.todo = {t.grid_key(): (t.method, t.total_epochs) for t in trials}   # grid_key -> (method, epochs)
        self.done_epochs: dict[str, int] = {}                            # grid_key -> epochs trained
        self.epoch_s: dict[str, list[float]] = {}                        # method -> epoch times seen
        self.n = len(trials)
        self.peak_running = 0
        self.until: int | None = None       # this round's rung: epochs past it are not logged (see run_round)
        self.keys: dict[str, str] = {}      # Tune trial_id -> grid_key
        self.runs: dict[str, str] = {}      # grid_key -> MLflow run_id
        self.logged: dict[str, int] = {}    # run_id -> last epoch logged
        self.values: dict[str, dict[int, float]] = {}  # grid_key -> epoch -> selection metric (a search)
        self.final: dict[str, dict] = {}    # trial_id -> final result
        self.rows: dict[str, Row] = {}      # grid_key -> summary row
        self.store_lost = False             # the tracking store stopped answering (see TrackingStoreLost)

    def _eta(self) -> float:
        """Seconds left: each unfinished trial's remaining epochs at its method's mean epoch time
        (BBB epochs cost several SGD epochs), spread over as many trials as have run side by side.
        In a search, a trial is expected to train as many epochs as the ended ones did on average
        (successive halving stops most recipes at its first rungs), not all of them; ended trials count nothing."""
        seen = [t for ts in self.epoch_s.values() for t in ts]
        ended = {r.key: self.done_epochs.get(r.key, 0) for r in self.rows.values() if r.status not in ("RUNNING", "WAITING")}
        ended_epochs = list(ended.values()) if self.select else []
        left = 0.0
        for key, (method, epochs) in self.todo.items():
            if key in ended:
                continue
            done = self.done_epochs.get(key, 0)
            target = max(done, min(epochs, sum(ended_epochs) / len(ended_epochs))) if ended_epochs else epochs
            times = self.epoch_s.get(method, seen)
            left += (target - done) * sum(times) / len(times)
        running = sum(r.status == "RUNNING" for r in self.rows.values())
        self.peak_running = max(self.peak_running, running)  # not 'now': a trial just ended, the next not yet started
        return left / max(1, self.peak_running)

    def _say(self, msg: str) -> None:
        done = sum(r.status in ("FINISHED", "STOPPED") for r in self.rows.values())
        failed = sum(r.status == "FAILED" for r in self.rows.values())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(self._eta())) if self.epoch_s else "--:--:--"
        print(f"[{done + failed}/{self.n} done, {failed} failed, ETA {eta_s}] {msg}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.keys:  # a retry after a failure keeps its MLflow run
            self._say(f"{self.rows[self.keys[trial.trial_id]].name} restarted from its resume state")
            return
        cfg = from_dict(trial.config["trial"])
        key = self.keys[trial.trial_id] = cfg.grid_key()
        if key in self.rows:  # a search's recipe promoted past a rung: the same run goes on
            row = self.rows[key]
            row.status = "RUNNING"
            self._say(f"{row.name} continues{f' to epoch {self.until}' if self.until else ''}")
            return
        run_id = tracking.start_run(self.client, self.exp_id, cfg, self.tags)
        self.runs[key] = run_id
        name = f"{cfg.label()} {cfg.dataset} seed {cfg.seed} [{key[:8]}]"
        self.rows[key] = Row(key, name, "RUNNING", run_id)
        ft = f" + {cfg.total_epochs - cfg.epochs} retraining" if cfg.total_epochs > cfg.epochs else ""
        self._say(f"{name} started ({cfg.epochs} epochs{ft})")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = self.keys[trial.trial_id]
        run_id, row = self.runs[key], self.rows[key]
        row.nodes.add(result["node_id"])
        if result["resumed_from"] and row.resumed_from != result["resumed_from"]:
            row.resumed_from = result["resumed_from"]
            self._say(f"{row.name} starts from the dense net run {result['dense_from']} trained ({row.resumed_from} epochs)"
                      if result.get("dense_from") else f"{row.name} resumed at epoch {row.resumed_from}")
        # a resumed trial's first report repeats epochs logged before (by this driver, before a retry): each is logged once
        new = [h for h in result["new_epochs"] if self.logged.get(run_id, 0) < h["epoch"] <= (self.until or h["epoch"])]
        if new:
            tracking.log_epochs(self.client, run_id, new)
            self.logged[run_id] = self.done_epochs[key] = new[-1]["epoch"]
            self.epoch_s.setdefault(self.todo[key][0], []).extend(h["epoch_time_s"] for h in new)
            if self.select:
                self.values.setdefault(key, {}).update((h["epoch"], h[self.select]) for h in new if self.select in h)
        if "final" in result:
            self.final[trial.trial_id] = json.loads(result["final"])
        elif new:
            sel = f" {self.select} {new[-1][self.select]:.4f}" if self.select in new[-1] else ""  # what a search ranks by
            self._say(f"{row.name} epoch {new[-1]['epoch']}/{trial.config['trial']['epochs']} "
                      f"val_acc {new[-1]['val_acc']:.4f}{sel}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = self.keys[trial.trial_id]
        run_id, row = self.runs[key], self.rows[key]
        res = self.final.pop(trial.trial_id, None)
        if res is None:  # reached this round's rung: it waits for the search's decision (stop or continue)
            row.status = "WAITING"
            self._say(f"{row.name} reached epoch {self.logged.get(run_id, 0)}: waiting for the other recipes")
            return
        with trial.checkpoint.as_directory() as d:
            tracking.finish_run(self.client, run_id, res["metrics"], res["info"], Path(d))
        shutil.rmtree(resume_dir(self.storage, self.experiment, key), ignore_errors=True)
        m = res["metrics"]
        levels = sorted(int(k.rsplit("_p", 1)[1]) for k in m if k.startswith("test_acc_p"))
        row.status, row.wall_s = "FINISHED", m["total_wall_s"]
        said = res["info"].get(collapse.TAG) == "true"
        collapsed = f"; {collapse.warning(res['val_acc'])}" if said else ""
        if not levels:  # trained only (a recipe search): the selection metric is on validation
            row.acc0 = m.get(self.select) if self.select else None
            self._say((f"{row.name} finished: {self.select} {row.acc0:.4f} in {row.wall_s:.0f}s" if row.acc0 is not None
                       else f"{row.name} finished in {row.wall_s:.0f}s") + collapsed)
            return
        row.acc0, row.acc_max = m[f"test_acc_{level_tag(levels[0] / 100)}"], m[f"test_acc_{level_tag(levels[-1] / 100)}"]
        self._say(f"{row.name} finished: acc {row.acc0:.4f} (p{levels[0]:02d}) -> {row.acc_max:.4f} "
                  f"(p{levels[-1]:02d}) in {row.wall_s:.0f}s{collapsed}")

    def stop(self, key: str, epoch: int) -> None:
        """A search stops this waiting recipe at its rung `epoch`: its run is FINISHED and says where."""
        run_id, row = self.runs[key], self.rows[key]
        self.client.log_metric(run_id, "stopped_at_epoch", epoch)
        self.client.set_tag(run_id, "stopped_early", "true")
        self.client.set_terminated(run_id, "FINISHED")
        shutil.rmtree(resume_dir(self.storage, self.experiment, key), ignore_errors=True)
        row.status = "STOPPED"
        self._say(f"{row.name} stopped at epoch {epoch} (successive halving)")

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.keys:  # failed before it ever started (e.g. its worker died)
            self.on_trial_start(iteration, trials, trial)
        row = self.rows[self.keys[trial.trial_id]]
        self.client.set_terminated(row.run_id, "FAILED")
        row.status = "FAILED"
        self._say(f"{row.name} FAILED: {last_error(trial)} (see {trial.local_path or trial.path})")

    def close(self) -> None:
        """Driver stopping (Ctrl-C, error): no run of ours may be left looking alive or finished. Not when
        the store is lost: each call would wait out MLflow's retries again, and the next start marks the
        runs left RUNNING as KILLED."""
        if self.store_lost:
            return
        for row in self.rows.values():
            if row.status in ("RUNNING", "WAITING"):
                self.client.set_terminated(row.run_id, "KILLED")
                row.status = "KILLED"


def run_sweep(setup: Setup, trials: list[TrialConfig], experiment: str, tags: Mapping[str, str]) -> list[Row]:
    """Train the given grid points to the end under Ray Tune (ray must be initialised), one MLflow run
    each with `tags` on it; returns the summary rows. `experiment` names the Ray run and the
    resume-state folder."""
    cb = SweepCallback(setup, trials, experiment, tags)
    try:
        run_round(setup, cb, trials)
    finally:
        cb.close()
    return list(cb.rows.values())


def run_round(setup: Setup, cb: SweepCallback, trials: list[TrialConfig], until: int | None = None) -> None:
    """One Tune run of `trials`, logged by `cb`, whose experiment names the Ray run and the resume-state
    folder; with its `select` set (a recipe search) the trials only train (no test evaluation).
    until (a round of a search): each trial stops once it has reported that epoch and waits (status
    WAITING) in `cb`, the search's callback that outlives its rounds; the next round resumes it from
    its resume state. A trial may train a little past `until` before Tune stops it: those epochs are
    not logged, and the per-epoch seeds make its next round's numbers the same either way."""
    cb.until = until
    res = setup.res
    param_space = {"trial": tune.grid_search([t.to_dict() for t in trials]), "threads": max(1, int(res.cpus)),
                   "resume_root": str(resume_dir(setup.storage, cb.experiment, "")), "evaluate": cb.select is None,
                   "dense_root": str(dense.dense_dir(setup.storage, cb.experiment)),
                   "until": until}
    fn = tune.with_resources(tune.with_parameters(trainable, arrays=setup.arrays), {"cpu": res.cpus, "gpu": res.gpus})
    tuner = tune.Tuner(
        fn, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=res.max_concurrent,
                                    trial_dirname_creator=lambda t: f"{from_dict(t.config['trial']).grid_key()}_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=f"{cb.experiment}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-to{until}" if until else ""),
            storage_path=str(setup.storage), verbose=0, callbacks=[cb], stop={"epoch": until} if until else None,
            failure_config=tune.FailureConfig(max_failures=2), checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    try:
        tuner.fit()
    except tune.TuneError as e:
        if (lost := _store_error(e)) is None:
            raise
        cb.store_lost = True
        raise TrackingStoreLost(f"the tracking store at {cb.client.tracking_uri} failed mid-sweep "
                                f"({str(lost).splitlines()[0]}); what was trained is kept in the resume states under "
                                f"{setup.storage}: once the store answers, run the same command again to resume.") from None
    except (EOFError, pickle.UnpicklingError):
        # After the last trial ended, Tune reads each failed trial's pickled error back from the storage
        # path to build results we do not use; on a full disk that file was written empty. The callback has
        # every trial's outcome already; only a trial still running means the sweep itself broke.
        if any(r.status == "RUNNING" for r in cb.rows.values()):
            raise
