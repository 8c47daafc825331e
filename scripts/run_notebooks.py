"""`make run`: execute notebooks 01 -> 04 headless into one run folder and say where to look.

The executed notebooks, an HTML rendering of each (figures inline, opens in any browser), the GAN run folder,
synthetic images, evaluation JSON and figures all land in runs/make-run-<UTC time>/. Notebooks that do not exist
yet are skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NOTEBOOKS = ["01_data.ipynb", "02_train_cgan.ipynb", "03_samples.ipynb", "04_evaluate_vgg16.ipynb"]


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 (inherited by the notebook kernel) at `path` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def write_html(ipynb: Path) -> Path:
    """Write NAME.html beside an executed NAME.ipynb: nbconvert's HTML, every figure embedded as a data URI."""
    import nbformat
    from nbconvert import HTMLExporter

    from cxr_utils.files import atomic_write_text

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(ipynb, as_version=4))
    return atomic_write_text(ipynb.with_suffix(".html"), body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default=None, help="default: runs/make-run-<UTC time>")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CXR_SMOKE=1)")
    args = ap.parse_args(argv)
    import papermill as pm

    if args.smoke:
        os.environ["CXR_SMOKE"] = "1"
    work = Path(args.work_dir or ROOT / "runs" / time.strftime("make-run-%Y%m%d-%H%M%S", time.gmtime())).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"make run: outputs go to {work}")
    for name in NOTEBOOKS:
        src = ROOT / "notebooks" / name
        if not src.exists():
            print(f"skip {name}: not written yet (its issue has not landed)")
            continue
        dst = work / name
        t0 = time.perf_counter()
        print(f"run  {name} -> {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst}")
        log = work / "logs" / f"{src.stem}.log"
        try:
            # the kernel inherits our stderr: send TF/Jupyter start-up chatter to a log file, keep the terminal clean
            with _stderr_to(log):
                pm.execute_notebook(str(src), str(dst), parameters={"WORK_DIR": str(work)}, cwd=str(ROOT / "notebooks"),
                                    kernel_name="python3", progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            html = write_html(dst) if dst.is_file() else None  # the cells up to the failure, readable in a browser
            print(f"error: {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                  f"       open {html or dst} to see the failing cell (kernel log: {log})", file=sys.stderr)
            return 1
        html = write_html(dst)
        print(f"done {name} in {time.perf_counter() - t0:.0f} s (HTML: {html.name})")
    print(f"\nAll done. Look in {work}/ : executed notebooks and their .html renderings (open in any browser), "
          f"gan/ (run folder), synthetic/, evaluation/, figures/, logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
