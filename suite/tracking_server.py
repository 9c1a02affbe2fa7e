"""The MLflow tracking server of a cluster's head, on a PostgreSQL store kept in the shared folder.

    python -m suite.tracking_server --data /mnt/shared/pgdata --artifacts /mnt/shared/mlartifacts \
        [--host 0.0.0.0] [--port 5000]

Why not sqlite on the shared volume: SQLite's locking is unreliable on NFS (sqlite.org/faq.html#q5) and
`mlflow server` answers from several worker processes. A PostgreSQL server is the only process that
opens its data directory, which PostgreSQL's manual allows on NFS mounted `hard` (EFS's default;
"File Systems", server setup chapter). Kept on the shared volume, the store outlives `ray down`,
like the resume states beside it.

Every step is done once: the database cluster is initialised if the folder has none, started if it is
not running, the `mlflow` database created if missing; then this process becomes `mlflow server`.
PostgreSQL listens on a Unix socket in /tmp only, no TCP port (none to clash with a distribution's own
PostgreSQL on 5432, none reachable from other machines), and trusts its local connections: only this
machine reaches it (the MLflow server itself has no login either; docs/clusters.md).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

USER = DATABASE = "mlflow"
SOCKETS = "/tmp"


def pg_bin() -> Path:
    """PostgreSQL's server programs: on PATH, or where Debian / Ubuntu's `postgresql` package puts them."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    sys.exit("suite.tracking_server: PostgreSQL's server is not installed on this machine (no pg_ctl on PATH "
             "or in /usr/lib/postgresql/*/bin). Install it (Debian / Ubuntu: sudo apt-get install -y postgresql) "
             "or start `mlflow server` on another backend store yourself.")


def ensure_postgres(data: Path, port: int) -> str:
    """Initialise, start and create the database as needed; return the backend store URI."""
    bin_ = pg_bin()

    def run(program: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_ / program), *args], check=True, capture_output=True, text=True)
    if not (data / "PG_VERSION").exists():
        run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
    if subprocess.run([str(bin_ / "pg_ctl"), "-D", str(data), "status"], capture_output=True).returncode != 0:
        run("pg_ctl", "-D", str(data), "-l", str(data / "server.log"), "-w", "-o", f"-h '' -p {port} -k {SOCKETS}",
            "start")
    host = ["-h", SOCKETS, "-p", str(port), "-U", USER]
    listed = run("psql", *host, "-d", "postgres", "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
    if listed.stdout.strip() != "1":
        run("createdb", *host, DATABASE)
    return f"postgresql+psycopg://{USER}@/{DATABASE}?host={SOCKETS}&port={port}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m suite.tracking_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="PostgreSQL's data folder (created on first use)")
    ap.add_argument("--artifacts", required=True, help="where the server stores run artifacts")
    ap.add_argument("--host", default="127.0.0.1", help="address the MLflow server listens on")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--pg-port", type=int, default=5432, help="names PostgreSQL's socket (/tmp/.s.PGSQL.PORT)")
    args = ap.parse_args(argv)
    try:
        uri = ensure_postgres(args.data.resolve(), args.pg_port)
    except subprocess.CalledProcessError as e:
        sys.exit(f"suite.tracking_server: {Path(e.cmd[0]).name} failed ({e.returncode}): {e.stderr.strip()}")
    mlflow = shutil.which("mlflow") or sys.exit("suite.tracking_server: `mlflow` is not on PATH")
    os.execv(mlflow, [mlflow, "server", "--host", args.host, "--port", str(args.port),
                      "--backend-store-uri", uri, "--artifacts-destination", args.artifacts])


if __name__ == "__main__":
    main()
