"""`python -m cxr_utils` for the kill tests, with one optional pause *inside* a file write so a kill -9 lands there.

CXR_TEST_PAUSE_FILE=<file name, or a glob pattern such as tstr-*.json> (and optionally CXR_TEST_PAUSE_IF=<text in the
written bytes>): the first atomic write of a matching file (that holds the text) writes half its bytes into the temp
file, creates CXR_TEST_PAUSE_MARKER and sleeps (for CXR_TEST_PAUSE_SECONDS, default an hour: the kill tests kill it
there), then finishes the write. Later writes are not paused.

Ctrl-C (SIGINT) raises KeyboardInterrupt here as in a terminal, however the test run was started: a command run in
the background (`&`) by a non-interactive shell (a CI script, `make test &`, `nohup ... &`) inherits SIGINT *ignored*
(POSIX), and Python keeps an ignored SIGINT ignored, so the trainer would never see the test's Ctrl-C and train on.
Nothing else differs from `python -m cxr_utils`.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import time
from pathlib import Path

from cxr_utils import files as cio
from cxr_utils.cli import main

PAUSE_FILE = os.environ.get("CXR_TEST_PAUSE_FILE")
PAUSE_IF = os.environ.get("CXR_TEST_PAUSE_IF", "").encode()
PAUSE_SECONDS = float(os.environ.get("CXR_TEST_PAUSE_SECONDS", "3600"))
_paused = False  # set by the one pause

if PAUSE_FILE:
    _real_write_bytes = cio.atomic_write_bytes

    def _paused_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
        """Like cio.atomic_write_bytes, but stops half-way through the first matching write."""
        global _paused
        if _paused or not fnmatch.fnmatchcase(Path(path).name, PAUSE_FILE) or PAUSE_IF not in data:
            return _real_write_bytes(path, data)
        _paused = True
        with cio.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            Path(os.environ["CXR_TEST_PAUSE_MARKER"]).write_text(f"{os.getpid()} {tmp}\n", encoding="utf-8")
            time.sleep(PAUSE_SECONDS)  # the kill tests kill us here
            fh.write(data[len(data) // 2:])
        return Path(path)

    cio.atomic_write_bytes = _paused_write_bytes  # every atomic writer of cxr_utils.files goes through this name

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
