"""Time a `make test` stage and record its wall time in a JSON file (for the performance report).

    python scripts/timed.py FILE.json NAME -- cmd ...   run cmd, record NAME's seconds, pass its exit status on
    python scripts/timed.py FILE.json --record NAME S   record S seconds for NAME
    python scripts/timed.py FILE.json --show            print the recorded stages
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxr_utils.files import atomic_write_json  # noqa: E402


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _record(path: Path, name: str, seconds: float, status: int) -> None:
    d = _load(path)
    d[name] = {"seconds": round(seconds, 1), "exit_status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(path, d)


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    if argv[1] == "--show":
        d = _load(path)
        total = sum(v["seconds"] for v in d.values())
        print("make test stages: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in d.items()) + f" (total {total:.0f} s)")
        return 0
    if argv[1] == "--record":
        _record(path, argv[2], float(argv[3]), 0)
        return 0
    name, cmd = argv[1], argv[argv.index("--") + 1 :]
    t0 = time.perf_counter()
    status = subprocess.call(cmd)
    _record(path, name, time.perf_counter() - t0, status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
