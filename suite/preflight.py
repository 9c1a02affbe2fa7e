"""Checks that answer within seconds, before Ray starts or anything trains; each failure is one line
naming the fix (a PreflightError).

Why: without them a tracking server that is down costs minutes of silent HTTP retries and then a
long traceback, Ray retries an address nothing listens on forever, and a trial bigger than every
node of the cluster waits forever for resources.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 5.0
# Written by `ray up` on the head node: the cluster's node types with their resources filled in
# (Ray Tune looks for the same file to tell a launcher-made cluster).
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
AUTOSCALER_STATUS_KEY = "__autoscaling_status"  # GCS key the autoscaler refreshes every update


class PreflightError(RuntimeError):
    """A check failed; the message is one line: what is wrong and the fix."""


def tracking_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<abs cwd>/mlflow.db (absolute: Ray
    changes working dirs)."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def check_tracking(uri: str, timeout: float = TIMEOUT_S) -> None:
    """An HTTP tracking server must answer (any HTTP status counts: it is there); a sqlite store's
    folder must exist (MLflow creates the file, not the folder)."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            return  # it answered (e.g. 401 behind auth, 404 behind a proxy): MLflow reports the rest
        except (OSError, ValueError) as e:  # refused, unresolvable, timed out, malformed URL
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, ssl.SSLError):
                return  # it answered; its certificate is MLflow's business (MLFLOW_TRACKING_SERVER_CERT_PATH)
            raise PreflightError(f"the MLflow tracking server at {uri} does not answer within {timeout:g} s ({reason}): "
                                 "start it (mlflow server --host 127.0.0.1 --port 5000) or pass a reachable "
                                 "--tracking-uri (or a sqlite:///path/mlflow.db file).") from None
    elif (db := sqlite_path(uri)) is not None:
        if not db.parent.is_dir():
            raise PreflightError(f"--tracking-uri {uri}: folder {db.parent} does not exist: create it or point the "
                                 "URI at an existing folder.")


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// store, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """A sqlite store that exists must be a sound database: a damaged one (a truncated copy, a full
    disk mid-write) otherwise fails deep inside MLflow with a traceback, or worse, after training.
    PRAGMA quick_check reads every page once (about a second per GB)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as con:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.OperationalError:  # busy or locked past the timeout: not damage; MLflow waits or says so itself
        return
    except sqlite3.DatabaseError as e:  # not a database, malformed
        verdict = str(e)
    if verdict != "ok":
        raise PreflightError(f"the MLflow store {db} is damaged (sqlite: {verdict.splitlines()[0]}): restore it from a "
                             f"backup, or salvage what it holds with `sqlite3 {db} .recover | sqlite3 recovered.db` "
                             "and pass --tracking-uri sqlite:///<folder>/recovered.db.")


def open_store(uri: str):
    """An MlflowClient on an existing store for a command that reads it (suite.export, the analysis
    commands): the server answers within seconds, a sqlite file exists and is sound. Never creates a
    store. Raises PreflightError (one line)."""
    check_tracking(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise PreflightError(f"no MLflow store at {uri}: pass --tracking-uri, the store suite.run logged to.")
    check_store(uri)
    from mlflow.tracking import MlflowClient
    return MlflowClient(uri)


def check_writable_folder(folder: Path, flag: str) -> None:
    """`folder`, or the nearest folder above it that exists (the rest is created), takes new files:
    probed with a nameless temporary file, so permissions, read-only mounts and ACLs all count."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{flag} {folder}: {existing} is a file, not a folder: pick another path.")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise PreflightError(f"{flag} {folder}: cannot write into {existing} ({e.strerror}): pick a folder you can "
                             "write to, or fix its permissions.") from None


def check_output_file(path: Path, flag: str) -> None:
    """A file a command will write at the end: its folder exists and takes files, and the path is not a folder."""
    path = path.resolve()
    if path.is_dir():
        raise PreflightError(f"{flag} {path} is a folder: give a file path.")
    if not path.parent.is_dir():
        raise PreflightError(f"{flag} {path}: the folder {path.parent} does not exist.")
    check_writable_folder(path.parent, flag)


def ray_token_available() -> bool:
    """A Ray auth token where Ray looks for one (env var, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token").expanduser().is_file()


def enable_ray_token_auth() -> None:
    """Send this machine's Ray token to an explicitly addressed cluster too.

    Ray 2.60 turns token auth on by itself for clusters it starts and for --address auto whenever a
    token exists (~/.ray/auth_token is written by the first local run), but not for an explicit
    host:port, so a cluster started here with `ray start --head` rejects us with InvalidAuthToken.
    RAY_AUTH_MODE=token is Ray's own switch for it; a cluster without token auth accepts the token
    too (tested). It must be set before Ray reads its config, i.e. before ray.init."""
    if "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def check_ray_address(address: str, timeout: float = TIMEOUT_S) -> None:
    """The cluster's GCS port must accept a connection (ray.init would retry it forever)."""
    if address.startswith("ray://"):
        raise PreflightError(f"--address {address}: Ray Client mode is not supported; run the sweep on the cluster "
                             "with `ray job submit ... -- python -m suite.run --address auto ...` (docs/clusters.md).")
    if address.startswith(("http://", "https://")):
        raise PreflightError(f"--address {address} is a dashboard / job-submission URL: give the cluster's GCS "
                             "address (host:6379), or auto on a cluster node, or use `ray job submit` (docs/clusters.md).")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address
        try:  # $RAY_ADDRESS, else the cluster `ray start` recorded on this machine
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise PreflightError("--address auto: no Ray cluster was started on this machine: start one "
                                 "(ray start --head), pass its host:port, or omit --address to start a local one.") from None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PreflightError(f"--address {address}: expected host:port (e.g. 127.0.0.1:6379) or auto.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise PreflightError(f"no Ray cluster answers at {address} ({e.strerror or e}): start one there "
                             f"(ray start --head --port={port}), fix the address, or omit --address to start a "
                             "local one.") from None


def launchable_node_types(path: Path = BOOTSTRAP_CONFIG) -> list[dict[str, float]] | None:
    """Resources of the node types the autoscaler may add (None: unknown on this machine)."""
    path = path.expanduser()
    if not path.is_file():
        return None
    import yaml  # the bootstrap file is JSON, which YAML reads too
    config = yaml.safe_load(path.read_text())
    return [dict(t.get("resources") or {}) for t in config.get("available_node_types", {}).values()
            if t.get("max_workers", 1) > 0]


def node_shapes() -> tuple[list[dict[str, float]], bool]:
    """(resources of each node a trial could run on, whether an autoscaler may add nodes of a shape
    not listed). Needs ray.init. Live nodes plus the node types the cluster launcher's config lists."""
    import ray
    shapes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    types = launchable_node_types()
    if types is None:
        return shapes, autoscaler_can_add_nodes()
    # a type without resources is sized by Ray on the node itself (on-premise, or autodetection failed)
    return shapes + [t for t in types if t], any(not t for t in types)


def autoscaler_can_add_nodes() -> bool:
    """Whether the cluster's autoscaler has node types to launch. Ray runs its autoscaler on every
    cluster; without an autoscaling config it uses a read-only node provider that names each node's
    type after the node (format_readonly_node_type), so only a type named otherwise comes from a config."""
    from ray.autoscaler._private.util import format_readonly_node_type
    from ray.experimental.internal_kv import _internal_kv_get
    status = json.loads(_internal_kv_get(AUTOSCALER_STATUS_KEY) or "{}")
    types = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(node_type != format_readonly_node_type(node_id) for node_id, node_type in types.items())


def check_fit(cpus: float, gpus: float, shapes: list[dict[str, float]]) -> None:
    """A trial's CPUs and GPUs are one placement bundle: some single node must hold them all."""
    if any(s.get("CPU", 0) >= cpus and s.get("GPU", 0) >= gpus for s in shapes):
        return
    most_cpu = max((s.get("CPU", 0) for s in shapes), default=0)
    most_gpu = max((s.get("GPU", 0) for s in shapes), default=0)
    fix = []
    if cpus > most_cpu:
        fix.append(f"--cpus-per-trial {max(1, int(most_cpu))}")
    if gpus > most_gpu:
        fix.append(f"--gpus-per-trial {most_gpu:g}" if most_gpu else "--gpus-per-trial 0 (no node has a GPU)")
    fix = " and ".join(fix) or f"--cpus-per-trial {max(1, int(most_cpu))} or a smaller --gpus-per-trial"
    raise PreflightError(f"a trial needs {cpus:g} CPU and {gpus:g} GPU on one node but no node of this Ray cluster "
                         f"has that (largest: {most_cpu:g} CPU, {most_gpu:g} GPU): pass {fix}, or add a bigger node.")


def describe(shapes: list[dict[str, float]]) -> str:
    """'2x {CPU: 1}, 1x {CPU: 0}': node shapes for progress lines."""
    counts: dict[str, int] = {}
    for s in shapes:
        key = json.dumps({k: v for k, v in s.items() if k in ("CPU", "GPU")}, sort_keys=True)
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in counts.items())
