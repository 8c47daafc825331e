"""Regenerate the number-bearing sections of the README and of the pages under docs/ from the JSON the code wrote.

    python scripts/update_readme.py          rewrite README.md and docs/*.md in place
    python scripts/update_readme.py --check  exit 1 if one of them is out of date (used by the tests)

Sections live between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, each in exactly one of DOCUMENTS
(the README keeps the headline; long tables live on pages under docs/). No number in them is typed by hand: each
comes from a JSON in assets/results/ (see assets/results/README.md for the commands).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cxr_utils.files import read_json  # noqa: E402  (after the path: the repository's package, not an installed one)

RESULTS = ROOT / "assets" / "results"
README = ROOT / "README.md"
# every document a generated section may live in (a section lives in exactly one)
DOCUMENTS = (README, *sorted((ROOT / "docs").glob("*.md")))


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def measured(name: str, command: str, after: str = "") -> Callable[[Callable[[dict, Path], str]], Callable[[], str]]:
    """A section drawn from one JSON of assets/results/: the decorated function gets (its data, its path); while the
    file is absent the section says how to measure it (`command`) instead."""
    def wrap(fn: Callable[[dict, Path], str]) -> Callable[[], str]:
        @functools.wraps(fn)
        def section() -> str:
            p = RESULTS / name
            if not p.is_file():
                return f"Not measured yet: `{command}`{after}.\n"
            return fn(read_json(p), p)
        return section
    return wrap


def section_results() -> str:
    """VGG16 protocol results (cxr_utils.evaluation.tables.results_markdown)."""
    from cxr_utils.evaluation.tables import results_markdown

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


def _pair(a: float | None, b: float | None, nd: int = 3) -> str:
    """"a / b" for a balanced / data pair of numbers."""
    f = lambda v: "n/a" if v is None else f"{v:.{nd}f}"  # noqa: E731
    return f"{f(a)} / {f(b)}"


@measured("digits_imbalanced.json", "python -m benchmarks.digits_imbalanced --out assets/results/digits_imbalanced.json")
def section_label_prior(d: dict, p: Path) -> str:
    """Generated-label prior balanced vs data on 1 : 3 digits (benchmarks/digits_imbalanced.py) and the x-ray check."""
    s = d["summary"]
    if not {"balanced", "data"} <= set(s):
        return f"Incomplete: `{_rel(p)}` holds only the {', '.join(s)} arm; rerun `{d.get('command', '')}`.\n"
    bal, dat = s["balanced"], s["data"]
    runs = d["runs"]
    steps = sorted({r["steps"] for r in runs})
    lines = [f"{d['imbalance']}. Both arms trained {', '.join(f'{x:,}' for x in steps)} steps per run on the same "
             f"{runs[0]['n_train_real']} real digits (seeds {', '.join(map(str, d['seeds']))}, alternating which arm "
             f"goes first; the digits benchmark's own selection on its real validation part). Each cell is "
             f"**balanced / data**, the mean over the seeds.", "",
             f"| | TSTR, synthetic set balanced ({d['plan']['n_per_class']} per digit) | TSTR, synthetic set with the real "
             "per-digit counts | "
             "TRTR | matched TSTR / TRTR |",
             "|---|---|---|---|---|",
             f"| all digits | {_pair(bal['tstr'], dat['tstr'], 4)} | {_pair(bal['tstr_matched'], dat['tstr_matched'], 4)} | "
             f"{bal['trtr']:.4f} | {_pair(bal['ratio_matched'], dat['ratio_matched'], 4)} |", "",
             "| Digit | Real GAN-training images | Fidelity | Spread | Test recall, TSTR (real counts) | "
             "Test recall, TSTR (balanced set) | Test recall, TRTR |",
             "|---|---|---|---|---|---|---|"]
    for b, a in zip(bal["per_class"], dat["per_class"], strict=True):
        lines.append(f"| {b['digit']} | {b['n_real']} | {_pair(b['fidelity'], a['fidelity'])} | "
                     f"{_pair(b['spread'], a['spread'], 2)} | {_pair(b['tstr_matched_recall'], a['tstr_matched_recall'])} | "
                     f"{_pair(b['tstr_recall'], a['tstr_recall'])} | {b['trtr_recall']:.3f} |")
    for name, label in (("odd", "odd (cut) digits"), ("even", "even digits")):
        gb, ga = bal["groups"][name], dat["groups"][name]
        lines.append(f"| {label}, mean | | {_pair(gb['fidelity'], ga['fidelity'])} | {_pair(gb['spread'], ga['spread'], 2)} | "
                     f"{_pair(gb['tstr_matched_recall'], ga['tstr_matched_recall'])} | "
                     f"{_pair(gb['tstr_recall'], ga['tstr_recall'])} | {gb['trtr_recall']:.3f} |")
    by_seed = {(r["seed"], r["label_prior"]): r for r in runs}
    pairs = [(seed, by_seed[seed, "balanced"], by_seed[seed, "data"]) for seed in d["seeds"]
             if (seed, "balanced") in by_seed and (seed, "data") in by_seed]
    diffs = [f"seed {seed}: {a['tstr'] - b['tstr']:+.4f} / {a['tstr_matched'] - b['tstr_matched']:+.4f}"
             for seed, b, a in pairs]
    spread = {g: dat["groups"][g]["spread"] - bal["groups"][g]["spread"] for g in ("odd", "even")}
    n_test = runs[0]["n_test_real"]
    lines += ["", f"Data minus balanced, TSTR on the balanced / the count-matched synthetic set: {'; '.join(diffs)} "
              f"(one test digit is {1 / n_test:.4f}). Spread, data minus balanced: odd digits {spread['odd']:+.2f}, "
              f"even digits {spread['even']:+.2f}."]
    m = d["machine"]
    lines += ["", f"{d['per_class_note']}. JSON: `{_rel(p)}` (`{d.get('command', '')}`; {m['cpu_model']}, "
              f"{m['cores']} cores, shared with other jobs)."]
    x = RESULTS / "xray_label_prior_check.json"
    if x.is_file():
        from benchmarks.xray_recipes import meets_bar

        xd = read_json(x)
        r = next(r for r in xd["recipes"] if r["recipe"] == "xray")
        best = r.get("best") or {}
        sc = best.get("scores") or {}
        from cxr_utils.config import RECIPES, GANConfig

        same = next((n for n in RECIPES if GANConfig().with_recipe(n) == GANConfig().with_fields(r.get("fields") or {})),
                    None)
        which = "The default `xray` recipe" + ("" if same == "xray" else
                                              f" of the time (today's `{same}`)" if same else " of the time")
        lines += ["", f"{which} on the real sample (5 NORMAL / 5 PNEUMONIA: the prior is 1/2 each, so "
                  f"\"data\" changes only the order of the labels in each batch) still trains with "
                  f"`label_prior: {r['label_prior']}`: {xd['steps']:,} steps "
                  f"(seed {xd['seed']}), kept generator at step {best.get('step', 'n/a')}, diversity "
                  f"{sc.get('diversity', float('nan')):.2f}, {_int(sc.get('train_covered'))} / {_int(sc.get('train_images'))} "
                  f"training images covered, fidelity {sc.get('fidelity', float('nan')):.2f}: bar "
                  f"{'met' if meets_bar(sc) else 'missed'}. A check that it trains, not a comparison: one seed, and the "
                  f"recipe's row under \"Does it learn real chest X-rays?\" (balanced labels) was measured on another "
                  f"machine. JSON: `{_rel(x)}` (`{xd.get('command', '')}`)."]
    return "\n".join(lines) + "\n"


@measured("digits_vgg16.json", "python benchmarks/digits_vgg16.py --seed 0 --out assets/results/digits_vgg16.json")
def section_digits_vgg16(d: dict, p: Path) -> str:
    """The seed's protocol on real digits: VGG16 (ImageNet and random init) TSTR/TRTR beside the logistic regression."""
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


ARTEFACT_NOTE = ("*Artefact score*: the share of each image's spectral energy at radial frequencies above 3/4 of "
                 "Nyquist (`cxr_utils.metrics.artefacts.high_frequency_share`: 2-D power spectrum, mean removed, no window; mean "
                 "over images), as a multiple of what the training X-rays hold, class-balanced (`hf_share_vs_real` "
                 "in `quality.csv`; 1.0x = as much as real images, a stride-2 checkerboard puts its energy there; "
                 "entries measured before that reference divide by the held-out val X-rays' value instead: 4 images "
                 "on the sample, a noisier reference); n/a for rows measured before the score existed. Since then the "
                 "kept generator's artefact score is at most `cxr_utils.gan.tracker.ARTEFACT_MAX` x the training images' "
                 "wherever any evaluation of the run was. *Stripes*: the second artefact score (`stripe_vs_real`, "
                 "`cxr_utils.metrics.artefacts.stripe_ratio`): the strongest single row or column frequency between "
                 "0.25 and 0.5 cycles/pixel, as a multiple of the training X-rays' share there (the 1-D marginals of each "
                 "image's power spectrum, class-balanced): the fine periodic banding of a nearest-neighbour upsample, "
                 "which the band share averages away; its line `cxr_utils.gan.tracker.STRIPE_MAX` is not a gate of the kept "
                 "generator (a blurred, unfinished image has no stripes either); n/a for entries measured before it "
                 "existed.")


def _artefact(scores: dict) -> str:
    """The kept generator's artefact score: its high-frequency share as a multiple of the real images' ("n/a" before
    the score existed)."""
    x, v, st = scores.get("hf_share_vs_real"), scores.get("hf_share"), scores.get("stripe_vs_real")
    return ("n/a" if x is None else f"{x:.2f}x ({v:.4f})") + "; stripes " + ("n/a" if st is None else f"{st:.2f}x")


@measured("xray_recipes.json", "python benchmarks/xray_recipes.py --out assets/results/xray_recipes.json --grid assets/xray-recipes-grid.png")
def section_xray(d: dict, p: Path) -> str:
    """The X-ray recipe table (benchmarks/xray_recipes.py JSON) and its real-vs-SYNTHETIC grid."""
    from benchmarks.xray_recipes import meets_bar

    bar = d["bar"]
    lines = [f"Each recipe trained {d['steps']:,} generator steps (seed {d['seed']}) on {d['data']}; scores of the generator "
             f"that the quality rule kept (`generator-best.keras`), measured by the trainer itself (`quality.csv`). "
             f"Bar of the `make run` check: diversity >= {bar['diversity']} and >= {bar['train_coverage']:.0%} of the "
             f"{bar['of']} training images covered.", "",
             "| Recipe | Kept epoch | Diversity | Training images covered | Fidelity | Artefact scores (x real) | "
             "KID (val, 4 images) | Collapse alarm (last evaluation) | Bar | Wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["recipes"]:
        b = (r.get("best") or {}).get("scores") or {}
        last = r.get("last") or {}

        def f(v: float | None, nd: int = 2) -> str:
            return "n/a" if v is None else f"{v:.{nd}f}"

        lines.append(f"| `{r['recipe']}` | {(r.get('best') or {}).get('epoch', 'n/a')} | {f(b.get('diversity'))} | "
                     f"{_int(b.get('train_covered'))} / {_int(b.get('train_images'))} | {f(b.get('fidelity'))} | "
                     f"{_artefact(b)} | {f(b.get('kid'), 4)} | {'yes' if last.get('alarm') else 'no'} | "
                     f"{'met' if meets_bar(b) else 'missed'} | {r['seconds']:.0f} s |")
    for r in d["recipes"]:
        if r.get("carried_over") and r.get("in_grid"):
            lines += ["", f"`{r['recipe']}`: {r['carried_over']}; the grid below draws its kept generator from that "
                      "run's folder."]
        elif r.get("carried_over"):
            lines += ["", f"`{r['recipe']}`: {r['carried_over']}; it is not in the grid below"
                      + (f", its images are in [the earlier grid]({r['grid']})" if r.get("grid") else "") + "."]
    if d.get("not_run"):
        lines += ["", f"Not run in this measurement: {', '.join(f'`{r}`' for r in d['not_run'])}."]
    lines += ["", d["can_show"], "", ARTEFACT_NOTE]
    if d.get("grid") and (ROOT / d["grid"]).is_file():
        lines += ["", f"![Real and SYNTHETIC chest X-rays per recipe]({d['grid']})", "",
                  f"Real training X-rays, then SYNTHETIC ones from each recipe's kept generator (`{d.get('command', '')}`)."]
    lines += ["", f"JSON: `{_rel(p)}`."]
    return "\n".join(lines) + "\n"


def _xray_entry(path: Path, name: str) -> dict | None:
    from cxr_utils.config import GANConfig

    if not path.is_file():
        return None
    r = next((r for r in read_json(path)["recipes"] if r["recipe"] == name), None)
    # an entry measured while the recipe meant other fields (before issue 20 `xray` was today's `xray-v1`) is not it
    return r if r is not None and GANConfig().with_fields(r.get("fields") or {}) == GANConfig().with_recipe(name) else None


@measured("artefact_calibration.json", "python -m benchmarks.artefact_calibration --out assets/results/artefact_calibration.json")
def section_artefact_calibration(d: dict, p: Path) -> str:
    """What real images score on the artefact score's scale (benchmarks/artefact_calibration.py), beside the gate."""
    s, g = d["sample"], d["digits"]
    per = lambda split: ", ".join(f"{n} {v:.2f}x" for n, v in s[split]["per_class_vs_train"].items())  # noqa: E731
    q = g["ratio_percentiles"]
    return (f"Real images on the artefact score's scale (high-frequency share over the training images' class-balanced "
            f"value): the sample's {s['val']['images']} held-out val X-rays score {s['val']['vs_train']:.2f}x ({per('val')}) "
            f"and its {s['test']['images']} test X-rays {s['test']['vs_train']:.2f}x ({per('test')}) of its "
            f"{s['train']['images']} training X-rays; random halves of the {g['images']} real digits ({g['half']} against "
            f"{g['half']}, {g['draws']} draws) {q['p5']:.2f}-{q['p95']:.2f}x (5th-95th percentile). The kept generator's "
            f"gate is {d['artefact_max']}x.{_stripe_calibration(d)} JSON: `{_rel(p)}` (`{d['command']}`).\n")


def _stripe_calibration(d: dict) -> str:
    """The stripe score's calibration sentence ("" for a JSON measured before the score existed)."""
    s, g = d["sample"], d["digits"]
    if "stripe_max" not in d:
        return ""
    st, sp = g["stripe_percentiles"], g["stripe_probe_count_percentiles"]
    return (f" On the stripe score's scale (the strongest row or column frequency between 0.25 and 0.5 cycles/pixel "
            f"over the training images' share there, a maximum over frequencies: real images of the same kind land at or "
            f"a little above 1.0x, blurred ones can land far below) the "
            f"sample's val X-rays score {s['val']['stripe_vs_train']:.2f}x and its test X-rays "
            f"{s['test']['stripe_vs_train']:.2f}x (2 images: the noise of a tiny set); the digits' halves "
            f"{st['p5']:.2f}-{st['p95']:.2f}x, and up to {g['probe_count']} digits per class (the quality probe's count) "
            f"against {g['half']} {sp['p5']:.2f}-{sp['p95']:.2f}x. The stripe line is {d['stripe_max']}x (shown, not a "
            f"gate; the sample's 2 test X-rays above it say how noisy a 10-image reference is).")


@measured("generator_upgrade.json", "python -m benchmarks.generator_upgrade --out assets/results/generator_upgrade.json")
def section_generator_upgrade(d: dict, p: Path) -> str:
    """Issue 20 before / after: digits (benchmarks/generator_upgrade.py), the sample X-rays (xray_recipes JSONs), the
    default recipe's step and the planned run's cost."""
    m = d["machine"]
    lines = [f"Measured on {m['cpu_model']} ({m['cores']} cores, shared with other jobs: the load average is recorded "
             f"per run in `{_rel(p)}`). *Before* is the configuration as it was, *after* adds what the default took of "
             "issue 20 (G: class-conditional LayerNorm, resize + convolution, one channel; D as before)."]
    dg = d.get("digits") or {}
    if dg:
        from benchmarks.digits_tstr import TARGET

        sets = {"digits16": "digits, 16 px", "digits32": "digits, 32 px (`--size 32`)",
                "imbalanced": "digits, 16 px, odd digits cut to 1 : 3 (`--imbalance`)"}
        lines += ["", f"**Digits** (the digits benchmark's own plan and selection; after = its config + "
                  f"{', '.join(f'`{k}: {v}`' for k, v in d['digits_changes'].items())}; it already resizes and "
                  "convolves and makes one channel). Target: " + TARGET + ", every seed.", "",
                  "| Set | Arm | Seeds | TSTR/TRTR, mean (lowest) | Count-matched TSTR/TRTR | Fidelity | Spread | Steps "
                  "trained | Wall time, mean | Target met by every seed |", "|---|---|---|---|---|---|---|---|---|---|"]
        for part, arms in dg.items():
            for arm in ("before", "after"):
                a = arms.get(arm)
                if not a:
                    continue
                cut = sum(1 for r in d.get("digits_runs", []) if r["part"] == part and r["arm"] == arm
                          and r.get("stopped_by_budget"))  # the 600 s budget ended the run before its plan
                budget = f" ({cut} of {len(a['seeds'])} runs cut by the 600 s budget)" if cut else ""
                lines.append(f"| {sets.get(part, part)} | {arm} | {', '.join(map(str, a['seeds']))} | {a['ratio']:.4f} "
                             f"({a['ratio_min']:.4f}) | {a['ratio_matched']:.4f} | {a['fidelity']:.3f} | {a['spread']:.3f} "
                             f"| {a['steps']:,.0f}{budget} "
                             f"| {a['seconds']:.0f} s | {'yes' if a['all_met'] else 'no'} |")
        lines += ["", "`" + "`; `".join(sorted({v for k, v in d["commands"].items() if k != "step"})) + "`."]
    xray = [(seed, RESULTS / f) for seed, f in ((0, "xray_recipes.json"), (1, "xray_recipes-seed1.json"))]
    rows = []
    for seed, f in xray:
        arms = [("xray-v1", "before"), ("xray", "after")]
        if seed and f.is_file():  # seed 0's variants are the recipe table; another seed's are listed here
            arms += [(r["recipe"], "variant") for r in read_json(f)["recipes"] if ":" in r["recipe"]]
        for name, arm in arms:
            r = _xray_entry(f, name) if arm != "variant" else \
                next(r for r in read_json(f)["recipes"] if r["recipe"] == name)
            if r is None:
                continue
            b = (r.get("best") or {}).get("scores") or {}
            from benchmarks.xray_recipes import meets_bar

            carried = " (carried over from an earlier run)" if r.get("carried_over") else ""
            rows.append(f"| {seed}{carried} | {arm} (`{name}`) | {(r.get('best') or {}).get('epoch', 'n/a')} | "
                        f"{b.get('diversity', float('nan')):.2f} | {_int(b.get('train_covered'))} / "
                        f"{_int(b.get('train_images'))} | {b.get('fidelity', float('nan')):.2f} | {_artefact(b)} | "
                        f"{'met' if meets_bar(b) else 'missed'} | {r['seconds']:.0f} s |")
    if rows:
        lines += ["", "**The real sample X-rays** (3,000 steps each, the trainer's own scores of the kept generator; seed 0 "
                  "is the table and grid under \"Does it learn real chest X-rays?\", with one variant per change; seed 1 "
                  "`assets/results/xray_recipes-seed1.json`):", "",
                  "| Seed | Arm | Kept epoch | Diversity | Training images covered | Fidelity | Artefact scores (x real) | "
                  "Bar | Wall time |", "|---|---|---|---|---|---|---|---|---|", *rows]
        f1 = xray[1][1]
        g1 = read_json(f1).get("grid") if f1.is_file() else None
        if g1 and (ROOT / g1).is_file():
            lines += ["", f"![Seed 1: real and SYNTHETIC chest X-rays per recipe]({g1})", "",
                      f"Seed 1's kept generators (`{read_json(f1).get('command', '')}`)."]
    st = d.get("step")
    if st:
        sp, fl = st["seconds_per_step"], st["flops_per_step"]
        pl = st["plan"]
        lines += ["", f"**The step** (batch {st['batch_size']}, {st['image_size']} px; `{st['recipes']['before']}` / "
                  f"`{st['recipes']['after']}`; best of {st['rounds']} alternating rounds, load average "
                  f"{st['load_average_before'][0]:.1f} before and {st['load_average_after'][0]:.1f} after): fp32 "
                  f"{sp['before/fp32']:.3f} / {sp['after/fp32']:.3f} s, bf16 {sp['before/bf16']:.3f} / "
                  f"{sp['after/bf16']:.3f} s per step ({sp['after/bf16'] / sp['before/bf16']:.2f}x in bf16); "
                  f"{fl['before'] / 1e9:.1f} / {fl['after'] / 1e9:.1f} GFLOP per step (the resize + convolution at the "
                  "doubled size costs more than a stride-2 transposed convolution).",
                  "", f"**The plan** (`train.plan_epochs`, a run that names no epochs): {pl['steps']:,} generator steps on "
                  f"the Kaggle set ({pl['n_train']:,} training images, batch {pl['batch_size']}: {pl['kimg']:,.0f} kimg). "
                  f"On this CPU in bf16 at the measured step: {pl['cpu_hours_bf16']:.1f} hours. On a T4: "
                  f"{60 * pl['t4_hours_estimate'][0]:.0f}-{60 * pl['t4_hours_estimate'][1]:.0f} minutes, "
                  f"{pl['t4_note']}."]
    lines += ["", f"JSON: `{_rel(p)}` (`{d['commands'].get('step', '')}` for the step)."]
    return "\n".join(lines) + "\n"


@measured("quality_bars.json", "python -m benchmarks.quality_bars --out assets/results/quality_bars.json")
def section_quality(d: dict, p: Path) -> str:
    """The quality bars: calibration on real digits and the cost at full scale (benchmarks/quality_bars.py JSON)."""
    cal, b = d["calibration"], d["calibration"]["bars"]

    def spread(v: dict[str, float]) -> str:
        return f"{v['mean']:.2f}x ({v['min']:.2f}-{v['max']:.2f})"

    lines = [f"Calibration on real data ({cal['data']}; {cal['reps']} random splits; `{d.get('command', '')}`"
             + (", quick: a pipeline check" if d.get("quick") else "") + "): each generator of known quality scored "
             f"by the trainer's own code against the real-vs-real baseline (mean, min-max over the splits), and how often "
             f"the learned bar (>= {b['learned_diversity']}x diversity and >= {b['learned_coverage']}x coverage) and the "
             f"collapse alarm (< {b['alarm_diversity']}x or < {b['alarm_coverage']}x) would fire.", "",
             "| Per class: training / held-out / synthetic images | Generator | Diversity vs real | Coverage vs real | "
             "Learned | Alarm |", "|---|---|---|---|---|---|"]
    for r in cal["rows"]:
        counts = f"{r['train_per_class']} / {r['held_out_per_class']} / {r['synthetic_per_class']}"
        if not r["judged_by_real_bars"]:
            counts += (f" (fewer than {b['min_held_out_per_class']} held out: the trainer uses the fixed bars; the "
                       "verdicts shown are those the ratios would give)")
        lines.append(f"| {counts} | {r['generator']} | {spread(r['diversity_vs_real'])} | "
                     f"{spread(r['train_coverage_vs_real'])} | {r['learned']} / {r['of']} | {r['alarm']} / {r['of']} |")
    lines += ["", "Generators: " + "; ".join(f"*{k}*: {v}" for k, v in cal["generators"].items()) + "."]
    c = d["cost"]
    m = d.get("machine") or {}
    lines += ["", f"Cost of one evaluation at full scale ({c['n_train']:,} training images "
              f"({' + '.join(str(v) for v in c['per_class']['train'])}), {c['n_val']:,} val images "
              f"({' + '.join(str(v) for v in c['per_class']['val'])}), {c['image_size']} px, {c['note']}; `{c['recipe']}` "
              f"generator, {c['precision']}, against {c['steps_between_evals']} train steps at batch {c['batch_size']} "
              f"measured in the same process; {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, shared with other "
              "work):", "",
              "| Synthetic images per class (`eval_n_per_class`) | Training images in diversity and coverage | "
              "Held-out stand-ins: against the training images / for KID and PRDC | One evaluation | Share of "
              "training | Probe build, once per run |", "|---|---|---|---|---|---|"]
    for e in c["by_n_per_class"]:
        st = e["stand_ins_per_class"]
        build = "classifier trained, " if e.get("classifier_trained") else "classifier read back, "
        lines.append(f"| {e['eval_n_per_class']} | {' + '.join(str(v) for v in e['coverage_train_per_class'])} | "
                     f"{' + '.join(str(v) for v in st.get('train', []))} / "
                     f"{' + '.join(str(v) for v in st.get('reference', []))} | {e['eval_seconds']:.1f} s | "
                     f"{100 * e['share_of_training']:.1f}% of {c['steps_between_evals'] * c['step_seconds']:.0f} s "
                     f"(target <= {100 * c['target_share']:.0f}%) | {e['probe_build_seconds']:.0f} s ({build}"
                     f"baseline {e['baseline_seconds']:.1f} s) |")
    lines += ["", f"JSON: `{_rel(p)}`."]
    return "\n".join(lines) + "\n"


@measured("benchmarks.json", "python -m benchmarks --quick --out assets/results/benchmarks.json")
def section_performance(d: dict, p: Path) -> str:
    """Performance table (benchmarks.report.performance_markdown)."""
    from benchmarks.report import performance_markdown

    return performance_markdown(p)


@measured("export_flush.json", "python -m benchmarks.export_flush --out assets/results/export_flush.json")
def section_export_flush(d: dict, p: Path) -> str:
    """One line: what flushing a staged synthetic export costs per PNG, per-file fsync vs one syncfs."""
    each, one = d["modes"]["fsync-each"], d["modes"]["syncfs"]
    return (f"Measured on the build machine ({d['cpu']}, {d['cores']} cores, shared with other work; its local disk, "
            f"`{d['folder']}`; {d['n']:,} export-like PNGs of about {d['bytes_per_png']:,} bytes, median of {d['repeats']} "
            f"alternating rounds): one fsync per PNG costs {each['flush_ms_per_png']:.2f} ms per PNG, one syncfs "
            f"{one['flush_ms_per_png']:.3f} ms per PNG ({d['flush_ratio_fsync_each_over_syncfs']:.0f}x less), beside "
            f"{one['write_ms_per_png']:.2f} ms to write a PNG and {d['encode_ms_per_png']:.2f} ms to encode it "
            f"(`{d['command']}`, `{_rel(p)}`).\n")


@measured("classifier_precision.json", "python -m benchmarks.classifier --out assets/results/classifier_precision.json")
def section_classifier(d: dict, p: Path) -> str:
    """The VGG16 classifier on this machine: seconds per epoch by input size and precision, and a short fit's accuracy."""
    m = d["machine"]
    by = {(t["input_size"], t["precision"]): t for t in d["timings"]}
    lines = [f"VGG16 classifier (notebook 04), {d['data']}; seconds of the second epoch of each stage (head: base frozen; "
             f"finetune: block5 trainable). {m['cpu_model']}, {m['cores']} cores, avx512_bf16 "
             f"{'yes' if m['flags'].get('avx512_bf16') else 'no'}, amx_bf16 {'yes' if m['flags'].get('amx_bf16') else 'no'}; "
             f"load average {d['load_average_before'][0]:.1f} before, {d['load_average_after'][0]:.1f} after: "
             f"**{d['note']}**.", "",
             "| Input size | VGG16 forward GFLOP per image | fp32 head / finetune s per epoch | bf16 head / finetune s per epoch "
             "| bf16 speed-up (head / finetune) | fp32 cost vs 64 px (head / finetune) |",
             "|---|---|---|---|---|---|"]
    for size in sorted({t["input_size"] for t in d["timings"]}):
        f, b = by[(size, "fp32")], by[(size, "bf16")]
        sp, cost = d["bf16_speedup"][str(size)], d["size_cost_vs_64"][str(size)]
        lines.append(f"| {size} px | {f['vgg16_forward_gflops_per_image']:.2f} | {f['seconds_per_epoch']['head']:.2f} / "
                     f"{f['seconds_per_epoch']['finetune']:.2f} | {b['seconds_per_epoch']['head']:.2f} / "
                     f"{b['seconds_per_epoch']['finetune']:.2f} | {sp['head']:.2f}x / {sp['finetune']:.2f}x | "
                     f"{cost['head']:.2f}x / {cost['finetune']:.2f}x |")
    sf = d["short_fit"]
    lines += ["", f"A short two-stage fit ({sf['epochs_per_stage']} + {sf['epochs_per_stage']} epochs, {sf['n_train']} real "
              f"digits, 64 px, {d['weights_source']}), test accuracy: fp32 {sf['fp32']['accuracy']:.4f}, bf16 "
              f"{sf['bf16']['accuracy']:.4f}, the whole fit {sf['fp32']['seconds']:.0f} s vs {sf['bf16']['seconds']:.0f} s "
              f"({sf['fp32']['n_test']} test digits; one seed: a check that bf16 trains, "
              f"not a measured accuracy cost). `auto` resolves to {d['auto_precision_here']} here."
              + (" **Quick mode: a pipeline check.**" if d.get("quick") else "")
              + f" JSON: `{_rel(p)}` (`{d.get('command', '')}`)."]
    return "\n".join(lines) + "\n"


@measured("rehearsal.json", "python -m benchmarks.rehearsal", " (writes `assets/results/rehearsal.json`)")
def section_rehearsal(d: dict, p: Path) -> str:
    """The full-scale LOAD TEST's stages and the per-GPU ESTIMATES (benchmarks/rehearsal.py)."""
    from benchmarks.rehearsal_estimate import default_plan, report_markdown

    text = report_markdown(d)
    e = d.get("estimates")
    if e:  # the JSON was measured with the plan of its day: say so when today's default differs
        now, then = default_plan(e["n_train"]), e["notebook_02"]
        if (now["epochs"], now["steps"]) != (then["epochs"], then["steps"]):
            text += (f"\n**Out of date:** measured with the default plan of its day ({then['steps']:,} steps, "
                     f"{then['epochs']} epochs, and the recipe of that day); today's default plans {now['steps']:,} steps "
                     f"({now['epochs']} epochs) for {e['n_train']:,} training images. Rerun `python -m benchmarks.rehearsal`.\n")
    return text


SECTIONS: dict[str, Callable[[], str]] = {
    "results": section_results,
    "digits": section_digits,
    "label_prior": section_label_prior,
    "artefact_calibration": section_artefact_calibration,
    "digits_vgg16": section_digits_vgg16,
    "xray": section_xray,
    "generator_upgrade": section_generator_upgrade,
    "quality": section_quality,
    "performance": section_performance,
    "classifier": section_classifier,
    "export_flush": section_export_flush,
    "rehearsal": section_rehearsal,
}


def relink(md: str, doc: Path) -> str:
    """Markdown links written relative to the repository root, made relative to `doc`'s folder (for pages in docs/)."""
    up = "../" * len(doc.parent.relative_to(ROOT).parts)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if not up or re.match(r"(https?:|#|mailto:|/)", target):
            return m.group(0)
        return f"{m.group(1)}({up}{target})"

    return re.sub(r"(\]\s*)\(([^)\s]+)\)", fix, md)


def render(text: str, names: list[str] | None = None, doc: Path = README) -> str:
    """`text` (of `doc`) with every generated section it holds (or, by default, every section: each must be there)
    re-rendered; the sections' links are made relative to `doc`."""
    for name in SECTIONS if names is None else names:
        pat = re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"error: no <!-- generated:{name} --> section")
        body = relink(SECTIONS[name](), doc)
        text = pat.sub(lambda m, body=body: m.group(1) + body + m.group(3), text)
    return text


def render_all() -> dict[Path, tuple[str, str]]:
    """Each document holding generated sections -> (its text now, its text re-rendered); every section in exactly one."""
    where: dict[str, list[Path]] = {name: [] for name in SECTIONS}
    texts = {doc: doc.read_text(encoding="utf-8") for doc in DOCUMENTS}
    for doc, text in texts.items():
        for name in re.findall(r"<!-- generated:(\w+) -->", text):
            if name not in SECTIONS:
                raise SystemExit(f"error: {_rel(doc)}: unknown generated section {name!r}")
            where[name].append(doc)
    bad = {n: [_rel(d) for d in docs] for n, docs in where.items() if len(docs) != 1}
    if bad:
        raise SystemExit(f"error: each generated section must be in exactly one document: {bad}")
    out = {}
    for doc, text in texts.items():
        names = [n for n, docs in where.items() if docs[0] == doc]
        if names:
            out[doc] = (text, render(text, names, doc))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = {doc: new for doc, (old, new) in render_all().items() if new != old}
    if args.check:
        for doc in stale:
            print(f"{_rel(doc)} is out of date: run `python scripts/update_readme.py`", file=sys.stderr)
        if not stale:
            print("README.md and docs/ are up to date")
        return 1 if stale else 0
    if stale:
        from cxr_utils.files import atomic_write_text

        for doc, new in stale.items():
            atomic_write_text(doc, new)
            print(f"{_rel(doc)} updated")
    else:
        print("README.md and docs/ already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
