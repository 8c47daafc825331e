"""Publish: write the repository's URL into every notebook's "Open in Colab" badge and Setup cell.

    python scripts/set_repo_url.py                         the URL of `git remote get-url origin`
    python scripts/set_repo_url.py https://github.com/you/cxr-cgan.git [--branch main]

An ssh remote (git@github.com:you/cxr-cgan.git) is written in its https form, which Colab can clone without keys.
Colab opens notebooks from GitHub only, so the URL must be a GitHub repository. Rerunning is harmless.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cxr_utils.files import atomic_write_text  # noqa: E402

BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/\s\"]+)/([^/\s\"]+)/blob/([^/\s\"]+)/notebooks/"
                   r"([^/\s\"]+\.ipynb)")
CLONE = re.compile(r'(REPO_URL = os\.environ\.get\("CXR_REPO_URL", ")([^"]+)("\))')
GITHUB = re.compile(r"^(?:https://|ssh://git@|git@)github\.com[:/]([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def https_url(url: str) -> str:
    """https://github.com/OWNER/REPO.git for any https or ssh form of a GitHub remote; ValueError otherwise."""
    m = GITHUB.match(url.strip())
    if not m:
        raise ValueError(f"{url}: not a GitHub repository URL (Colab's badge opens notebooks from GitHub only); "
                         f"give one like https://github.com/OWNER/cxr-cgan.git")
    return f"https://github.com/{m.group(1)}/{m.group(2)}.git"


def origin_url(repo: Path = ROOT) -> str | None:
    """`git remote get-url origin` of `repo`, or None when there is no such remote (or no git)."""
    try:
        r = subprocess.run(["git", "-C", str(repo), "remote", "get-url", "origin"], capture_output=True, text=True)
    except OSError:
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def notebook_urls(path: Path) -> dict[str, object]:
    """The repository a notebook names: {'badges': [(owner, repo, branch, file)], 'clone': [url]}."""
    text = "\n".join("".join(c.get("source", [])) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])
    return {"badges": BADGE.findall(text), "clone": [m.group(2) for m in CLONE.finditer(text)]}


def rewritten(path: Path, url: str, branch: str = "main") -> str | None:
    """The notebook's text with its badge and Setup-cell clone URL pointing at `url` (https form); None if unchanged."""
    owner, repo = GITHUB.match(url).group(1, 2)  # type: ignore[union-attr]
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = {"badge": 0, "clone": 0}

    def badge(m: re.Match) -> str:
        found["badge"] += 1
        return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/notebooks/{m.group(4)}"

    def clone(m: re.Match) -> str:
        found["clone"] += 1
        return m.group(1) + url + m.group(3)

    for cell in nb["cells"]:
        src = [CLONE.sub(clone, BADGE.sub(badge, line)) for line in cell.get("source", [])]
        cell["source"] = src
    if found != {"badge": 1, "clone": 1}:
        raise ValueError(f"{path}: expected one Colab badge and one REPO_URL line, found {found['badge']} and "
                         f"{found['clone']}; restore the notebook's first cells from git")
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"  # the format Jupyter writes: a clean diff
    return None if new == path.read_text(encoding="utf-8") else new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?", help="the repository's URL (default: git remote get-url origin)")
    ap.add_argument("--branch", default="main", help="the branch the badges open (default: main)")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests run it on a copy
    args = ap.parse_args(argv)
    if "/" in args.branch or not args.branch.strip():
        # the badge's path is .../blob/<branch>/notebooks/...: a "/" in the branch could not be found again next time
        print(f"error: --branch {args.branch!r}: use a branch name without '/'", file=sys.stderr)
        return 2
    raw = args.url or origin_url(args.root)
    if not raw:
        print("error: no URL given and `git remote get-url origin` names none; run "
              "`python scripts/set_repo_url.py https://github.com/OWNER/cxr-cgan.git`", file=sys.stderr)
        return 2
    try:
        url = https_url(raw)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    notebooks = sorted((args.root / "notebooks").glob("*.ipynb"))
    if not notebooks:
        print(f"error: {args.root / 'notebooks'}: no notebooks found", file=sys.stderr)
        return 2
    try:  # every notebook is checked before any is written: a bad one leaves all four as they were
        new = {p: rewritten(p, url, args.branch) for p in notebooks}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    changed = [p.name for p, text in new.items() if text is not None]
    for p, text in new.items():
        if text is not None:
            atomic_write_text(p, text)
    print(f"{url} (branch {args.branch}) in {len(notebooks)} notebooks; "
          + (f"changed {', '.join(changed)}: commit and push them" if changed else "already set, nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
