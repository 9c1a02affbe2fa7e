"""Writing the files an analysis command produces: every file appears whole or not at all."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends without an error
    (os.replace within a folder is atomic) and is removed otherwise, so a reader finds the old file or the
    new one, never a half-written one. The name carries the pid (two processes never share it) and ends
    in the file's suffix (writers such as savefig pick the format from it)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
