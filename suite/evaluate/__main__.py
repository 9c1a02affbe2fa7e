"""`python -m suite.evaluate`: evaluate finished runs again from their stored weights with the current
evaluation code, and log the metrics to the same runs (suite/reevaluate.py).

    python -m suite.evaluate [--run-id ID | --experiment NAME] [--tracking-uri URI] [--force]
                             [--device cpu|cuda|auto] [--data-dir DIR] [--threads N]

Without --run-id or --experiment: every experiment of the store. Runs whose tag eval_version is
already suite.evaluate.EVAL_VERSION are left alone unless --force. Exit status: 0, 1 when a run was
skipped (its artifacts cannot rebuild its levels: one line each), 2 on bad input.

The command-line entry point, the one file of this package above the layers (it reads the store and
takes the experiment's lock, which suite.run also takes: one writer per experiment at a time).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from .. import locks, preflight, reevaluate
from ..config import DEVICES, ConfigError
from ..data import DataError
from ..driver import experiment_lock
from ..preflight import PreflightError
from . import EVAL_VERSION


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m suite.evaluate", description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="one run (default: every finished run of the experiment or the store)")
    which.add_argument("--experiment", help="one experiment's finished runs (default: every experiment of the store)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--force", action="store_true", help=f"also runs already at eval_version {EVAL_VERSION}")
    ap.add_argument("--device", choices=list(DEVICES), default=None,
                    help="evaluate on this device (default: each run's own; a run's numbers are reproduced on its device)")
    ap.add_argument("--data-dir", help="dataset cache dir (default: the run's, else $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, suite.run's --cpus-per-trial: latencies are timed at it)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads={args.threads} is invalid: use an integer >= 1.")
    return args


def selected(client, args: argparse.Namespace, uri: str) -> list[tuple[str, list]]:
    """(experiment name, the runs to evaluate again) per experiment; bad input is one PreflightError."""
    from ..tracking import runs_by_status
    if args.run_id:
        try:
            run = client.get_run(args.run_id)
        except MlflowException:
            raise PreflightError(f"no run {args.run_id} in {uri}: check --run-id and --tracking-uri.") from None
        if run.info.status != "FINISHED":
            raise PreflightError(f"run {args.run_id} is {run.info.status}, not FINISHED: finish it (python -m suite.run "
                                 "resumes it) or pick a finished run.")
        if not reevaluate.evaluated(run):
            raise PreflightError(f"run {args.run_id} was not evaluated by a trial (no test_acc_<level> metric: a recipe "
                                 "search's run trains only): there is nothing to evaluate again.")
        chosen = [(client.get_experiment(run.info.experiment_id).name, [run])]
    elif args.experiment:
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None or exp.lifecycle_stage == "deleted":
            names = sorted(e.name for e in client.search_experiments())
            raise PreflightError(f"no experiment {args.experiment!r} in {uri}; it has: {', '.join(names) or 'none'}.")
        chosen = [(exp.name, runs_by_status(client, exp.experiment_id, "FINISHED"))]
    else:
        chosen = [(e.name, runs_by_status(client, e.experiment_id, "FINISHED")) for e in client.search_experiments()]
    return [(name, todo) for name, runs in chosen if (todo := [r for r in runs if reevaluate.needs(r, args.force)])]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    uri = preflight.tracking_uri(args.tracking_uri)
    try:
        client = preflight.open_store(uri)
        todo = selected(client, args, uri)
        if not todo:
            print(f"nothing to do: every finished run in {uri} that was selected is at eval_version {EVAL_VERSION} "
                  "(--force evaluates them again)")
            return 0
        where = reevaluate.Where(args.device, str(Path(args.data_dir).resolve()) if args.data_dir else None, args.threads)
        me, skipped, n = locks.Holder.me(Path("(python -m suite.evaluate)")), [], 0
        for name, runs in todo:
            print(f"experiment {name!r}: {len(runs)} run(s) to evaluate again")
            with experiment_lock(uri, name, me):
                skipped += reevaluate.reevaluate(client, runs, where)
            n += len(runs)
    except (PreflightError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"evaluated {n - len(skipped)} run(s) again at eval_version {EVAL_VERSION}"
          f"{f', skipped {len(skipped)} (see their lines above)' if skipped else ''}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
