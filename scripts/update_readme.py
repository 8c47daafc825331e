"""Regenerate the README's number-bearing sections from the JSON files the code wrote.

    python scripts/update_readme.py          rewrite README.md in place
    python scripts/update_readme.py --check  exit 1 if README.md is out of date (used by the tests)

Sections live between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`. No number in them is typed
by hand: each comes from a JSON in assets/results/ (see assets/results/README.md for the commands).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "assets" / "results"
README = ROOT / "README.md"


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def section_results() -> str:
    """VGG16 protocol results (cxr_utils.report.results_markdown)."""
    from cxr_utils.io import read_json
    from cxr_utils.report import results_markdown

    paths = sorted(RESULTS.glob("evaluation-*.json"))
    body = results_markdown(*paths, seed_check=False) if paths else (
        "No evaluation JSON in `assets/results/` yet: run `make run` and copy `evaluation/*.json` there.\n")
    claim = RESULTS / "seed_claim.json"
    if claim.is_file():
        c = read_json(claim)
        body += (f"\n**Checking the seed's claim** (`{_rel(claim)}`, from `{c['command']}`): {c['statement']}\n")
    return body


def section_digits() -> str:
    """Digits train-on-synthetic/test-on-real table from benchmarks/digits_tstr.py JSONs."""
    from cxr_utils.io import read_json

    paths = sorted(RESULTS.glob("digits_tstr-seed*.json")) + sorted(RESULTS.glob("digits_tstr-acgan-seed*.json"))
    if not paths:
        return "Not measured yet: `python benchmarks/digits_tstr.py --seed 0 --out assets/results/digits_tstr-seed0.json`.\n"
    from benchmarks.digits_tstr import TARGET, target_met

    lines = ["| Recipe | Seed | Steps (selected) | TSTR | TRTR | TSTR/TRTR | Fidelity | Spread | Target | Wall time | JSON |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        d = read_json(p)
        ok = "met" if target_met(d["ratio"], d["seconds"]) else "missed"
        recipe = "`projection` (benchmark default)" if d.get("config", {}).get("projection") else "`seed` ACGAN"
        sel = next((c for c in d.get("curve", []) if c.get("step") == d.get("selected_step")), {})
        diag = [f"{sel[k]:.3f}" if k in sel else "n/a" for k in ("fidelity", "spread")]
        lines.append(f"| {recipe} | {d['seed']} | {d['steps']} ({d.get('selected_step', '?')}) | {d['tstr']:.4f} | "
                     f"{d['trtr']:.4f} | {d['ratio']:.4f} | {diag[0]} | {diag[1]} | {TARGET}: {ok} | "
                     f"{d['seconds']:.0f} s | `{_rel(p)}` |")
    grid = ROOT / "assets" / "digits-grid-seed0.png"
    if grid.is_file():
        lines += ["", f"![Real and synthetic digits]({_rel(grid)})", "",
                  "Real test digits and SYNTHETIC ones exported by the seed-0 generator "
                  "(`python benchmarks/digits_tstr.py --seed 0 --grid assets/digits-grid-seed0.png`)."]
    return "\n".join(lines) + "\n"


def section_digits_vgg16() -> str:
    """The seed's protocol on real digits: VGG16 (ImageNet and random init) TSTR/TRTR beside the logistic regression."""
    from cxr_utils.io import read_json

    p = RESULTS / "digits_vgg16.json"
    if not p.is_file():
        return "Not measured yet: `python benchmarks/digits_vgg16.py --seed 0 --out assets/results/digits_vgg16.json`.\n"
    d = read_json(p)
    lines = ["| Classifier | Weights | TSTR (trained on synthetic) | TRTR (trained on real) | TSTR/TRTR |",
             "|---|---|---|---|---|"]
    for e in d["vgg16"].values():
        lines.append(f"| VGG16, {d['input_size']} px input, 10-way head (`evaluation.fit_classifier`) | {e['weights_source']} | "
                     f"{e['tstr']['accuracy']:.4f} | {e['trtr']['accuracy']:.4f} | {e['ratio']:.4f} |")
    lr = d["logistic_regression"]
    lines.append(f"| logistic regression on pixels (`digits_tstr.py`) | - | {lr['tstr']:.4f} | {lr['trtr']:.4f} | {lr['ratio']:.4f} |")
    g = d["gan"]
    lines += ["", f"Real test digits: {d['n_test_real']}; TRTR trains on the {d['n_train_real']} real digits the GAN trained "
              f"on, TSTR on {d['n_synthetic']} synthetic ones from the generator kept at step {g['selected_step']} by "
              f"validation TSTR ({d['n_val_real']} real validation digits, which also early-stop every VGG16 fit); "
              f"{d['size']} px digits, GAN seed {d['seed']}, one classifier seed"
              + (", **quick mode: a pipeline check**" if d.get("quick") else "") + f"; {d['seconds']:.0f} s in all on "
              f"{d['machine']['cores']} CPU cores. JSON: `{_rel(p)}` (`{d['command']}`)."]
    return "\n".join(lines) + "\n"


def _int(v: float | None) -> str:
    return "n/a" if v is None else f"{int(v)}"


def section_xray() -> str:
    """The X-ray recipe table (benchmarks/xray_recipes.py JSON) and its real-vs-SYNTHETIC grid."""
    from cxr_utils.io import read_json

    p = RESULTS / "xray_recipes.json"
    if not p.is_file():
        return ("Not measured yet: `python benchmarks/xray_recipes.py --out assets/results/xray_recipes.json "
                "--grid assets/xray-recipes-grid.png`.\n")
    from benchmarks.xray_recipes import meets_bar

    d = read_json(p)
    bar = d["bar"]
    lines = [f"Each recipe trained {d['steps']:,} generator steps (seed {d['seed']}) on {d['data']}; scores of the generator "
             f"that the quality rule kept (`generator-best.keras`), measured by the trainer itself (`quality.csv`). "
             f"Bar of the `make run` check: diversity >= {bar['diversity']} and >= {bar['train_coverage']:.0%} of the "
             f"{bar['of']} training images covered.", "",
             "| Recipe | Kept epoch | Diversity | Training images covered | Fidelity | KID (val, 4 images) | Collapse alarm "
             "(last evaluation) | Bar | Wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in d["recipes"]:
        b = (r.get("best") or {}).get("scores") or {}
        last = r.get("last") or {}

        def f(v: float | None, nd: int = 2) -> str:
            return "n/a" if v is None else f"{v:.{nd}f}"

        lines.append(f"| `{r['recipe']}` | {(r.get('best') or {}).get('epoch', 'n/a')} | {f(b.get('diversity'))} | "
                     f"{_int(b.get('train_covered'))} / {_int(b.get('train_images'))} | {f(b.get('fidelity'))} | "
                     f"{f(b.get('kid'), 4)} | {'yes' if last.get('alarm') else 'no'} | "
                     f"{'met' if meets_bar(b) else 'missed'} | {r['seconds']:.0f} s |")
    for r in d["recipes"]:
        if r.get("carried_over"):
            lines += ["", f"`{r['recipe']}`: {r['carried_over']}; it is not in the grid below"
                      + (f", its images are in [the earlier grid]({r['grid']})" if r.get("grid") else "") + "."]
    if d.get("not_run"):
        lines += ["", f"Not run in this measurement: {', '.join(f'`{r}`' for r in d['not_run'])}."]
    lines += ["", d["can_show"]]
    if d.get("grid") and (ROOT / d["grid"]).is_file():
        lines += ["", f"![Real and SYNTHETIC chest X-rays per recipe]({d['grid']})", "",
                  f"Real training X-rays, then SYNTHETIC ones from each recipe's kept generator (`{d.get('command', '')}`)."]
    lines += ["", f"JSON: `{_rel(p)}`."]
    return "\n".join(lines) + "\n"


def section_performance() -> str:
    """Performance table (benchmarks.report.performance_markdown)."""
    from benchmarks.report import performance_markdown

    p = RESULTS / "benchmarks.json"
    if not p.is_file():
        return "Not measured yet: `python -m benchmarks --quick --out assets/results/benchmarks.json`.\n"
    return performance_markdown(p)


def section_troubleshooting() -> str:
    """The 'When things go wrong' table, kept in docs/ next to the reliability tests that prove it."""
    p = ROOT / "docs" / "when-things-go-wrong.md"
    if not p.is_file():
        return "See the reliability tests in `tests/reliability/`.\n"
    text = p.read_text(encoding="utf-8")
    # drop the document's own top-level title: the README has the section heading
    return re.sub(r"\A#[^\n]*\n+", "", text).rstrip() + "\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "results": section_results,
    "digits": section_digits,
    "digits_vgg16": section_digits_vgg16,
    "xray": section_xray,
    "performance": section_performance,
    "troubleshooting": section_troubleshooting,
}


def render(text: str) -> str:
    """README text with every generated section replaced by freshly rendered content."""
    for name, fn in SECTIONS.items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"error: README.md has no <!-- generated:{name} --> section")
        body = fn()
        text = pat.sub(lambda m, body=body: m.group(1) + body + m.group(3), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    old = README.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is out of date: run `python scripts/update_readme.py`", file=sys.stderr)
            return 1
        print("README.md is up to date")
        return 0
    if new != old:
        from cxr_utils.io import atomic_write_text

        atomic_write_text(README, new)
        print("README.md updated")
    else:
        print("README.md already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
