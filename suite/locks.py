"""One driver per experiment per tracking store, and one per resume folder.

Why: a second driver on the same experiment marks the first one's RUNNING runs KILLED and trains the
same grid points again. So the lock lives with what it protects, whatever the storage path:
  - a sqlite store: an flock on <db>.locks/<experiment>.lock beside the store file, held while the
    driver lives (the kernel releases it when the process ends, however it ends); the same folder's
    store.lock serialises the store's creation (two processes migrating a new file break it);
  - any other store (a tracking server): the experiment tag `driver_lock`, a lease the driver renews
    every RENEW_S and that runs out LEASE_S after the last renewal, so a dead driver's lock expires;
  - the storage path: an flock on <storage>/<experiment>/.driver.lock, because resume folders are
    per storage path and two stores may share one (a rerun deletes the other driver's resume states).
Each lock's file or tag holds its holder (host, pid, storage path, start), which a refusal names.
"""
from __future__ import annotations

import _thread
import dataclasses
import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .preflight import PreflightError

TAG = "driver_lock"
LEASE_S = 120.0   # a lease not renewed for this long is free
RENEW_S = 30.0    # a live driver renews every RENEW_S: three renewals may fail before the lease runs out
SETTLE_S = 2.0    # a tag write has no compare-and-set: read it back after this long, the last writer wins


@dataclass(frozen=True)
class Holder:
    """Who holds a lock; `expires` (unix time) is a lease's end, 0 for an flock (held while the process lives)."""

    host: str
    pid: int
    storage: str
    since: float
    token: str
    expires: float = 0.0

    @classmethod
    def me(cls, storage: Path) -> Holder:
        return cls(socket.gethostname(), os.getpid(), str(storage), time.time(), uuid.uuid4().hex)

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        """The record a lock holds, or None (no record yet, or not one of ours)."""
        try:
            return cls(**json.loads(text or ""))
        except (ValueError, TypeError):
            return None

    def record(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def gone(self) -> bool:
        """The holder was a process on this host that no longer runs: its lock is free now, not only
        when its lease runs out (a driver that ended with its tracking server down could not release
        it). A pid reused since is taken as alive: then the lease decides, as for another host."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def who(self) -> str:
        return (f"pid {self.pid} on host {self.host} (storage path {self.storage}, "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))})")


def refusal(what: str, other: Holder | None) -> PreflightError:
    """The one line a second driver gets."""
    who = other.who() if other else "another driver (it is writing its record now)"
    lease = (f"; if that driver is dead, its lease runs out at {time.strftime('%H:%M:%S', time.localtime(other.expires))}"
             if other and other.expires else "")
    return PreflightError(f"{what} is already being driven by {who}: wait for it to finish, or stop it (Ctrl-C) and "
                          f"run this command again to resume{lease}.")


def lock_folder(db: Path) -> Path:
    """The folder beside a sqlite store that holds its locks."""
    return db.with_name(db.name + ".locks")


def experiment_file(db: Path, experiment: str) -> Path:
    """<db>.locks/<experiment>.lock; a name with characters a file name cannot hold gets a hash too."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", experiment)
    if slug != experiment:
        slug += "-" + uuid.uuid5(uuid.NAMESPACE_URL, experiment).hex[:8]
    return lock_folder(db) / f"{slug}.lock"


def holder_of(f, wait_s: float = 1.0) -> Holder | None:
    """The record in a locked file. Its holder writes it right after taking the flock, so a driver
    refused in between finds the file empty: it reads again for up to wait_s before saying so."""
    deadline = time.monotonic() + wait_s
    while True:
        f.seek(0)
        other = Holder.parse(f.read())
        if other is not None or time.monotonic() > deadline:
            return other
        time.sleep(0.02)


@contextmanager
def file_lock(path: Path, me: Holder, what: str) -> Iterator[None]:
    """Hold an exclusive flock on `path` with `me` as its content, or raise the refusal naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refusal(what, holder_of(f)) from None
        f.truncate(0)
        f.write(me.record())
        f.flush()
        yield


@contextmanager
def creating(db: Path) -> Iterator[None]:
    """Serialise opening a sqlite store: MLflow creates and migrates a new file on first connect, and
    two processes doing that at once leave it broken ("duplicate column name")."""
    path = lock_folder(db) / "store.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # held for seconds at most: the migration
        yield


class Lease:
    """The experiment tag `driver_lock` as a renewed lease, for stores no flock reaches (a tracking
    server). A tag write is not a compare-and-set, so taking it is: read it (held and unexpired:
    refused), write ours, wait SETTLE_S, read it back (another driver's: refused). Two drivers whose
    reads both come before either write both write; the later write wins, and the earlier writer
    sees it on reading back. A renewal that finds another driver's record (this one stalled longer
    than the lease) stops this driver as Ctrl-C would."""

    def __init__(self, client, exp_id: str, me: Holder, what: str):
        self.client, self.exp_id, self.me, self.what = client, exp_id, me, what
        self.stop = threading.Event()
        self.renewer = threading.Thread(target=self.renew, name="driver-lock-lease", daemon=True)

    def holder(self) -> Holder | None:
        return Holder.parse(self.client.get_experiment(self.exp_id).tags.get(TAG))

    def write(self) -> None:
        self.me = dataclasses.replace(self.me, expires=time.time() + LEASE_S)
        self.client.set_experiment_tag(self.exp_id, TAG, self.me.record())

    def __enter__(self) -> Lease:
        other = self.holder()
        if other and other.token != self.me.token and other.expires > time.time() and not other.gone():
            raise refusal(self.what, other)
        self.write()
        time.sleep(SETTLE_S)
        other = self.holder()
        if other is None or other.token != self.me.token:
            raise refusal(self.what, other)
        self.renewer.start()
        return self

    def renew(self) -> None:
        while not self.stop.wait(RENEW_S) and self.renew_once():
            pass

    def renew_once(self) -> bool:
        """One renewal: False (and the main thread interrupted, as Ctrl-C would) when another driver
        holds the lock now."""
        try:
            other = self.holder()
            if other is None or other.token != self.me.token:
                print(f"error: lost the lock: {self.what} is now driven by {other.who() if other else 'nobody'} "
                      "(this driver did not renew its lease in time); stopping.", file=sys.stderr, flush=True)
                _thread.interrupt_main()
                return False
            self.write()
        except Exception as e:  # the server did not answer this time: the lease still lasts LEASE_S
            print(f"warning: could not renew the driver lock ({type(e).__name__}); retrying in {RENEW_S:g} s",
                  file=sys.stderr, flush=True)
        return True

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.renewer.join()
        try:
            if (other := self.holder()) is not None and other.token == self.me.token:
                self.client.delete_experiment_tag(self.exp_id, TAG)
        except Exception as e:  # the server is gone: the lease runs out by itself, and no error may hide the sweep's
            print(f"warning: could not release the driver lock ({type(e).__name__}); it runs out at "
                  f"{time.strftime('%H:%M:%S', time.localtime(self.me.expires))}", file=sys.stderr, flush=True)
