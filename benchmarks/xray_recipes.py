"""X-ray recipe benchmark: every named recipe trained on the real sample's chest X-rays for the same step budget.

Each recipe of `cxr_utils.config.RECIPES` trains with the project's own trainer (`fit.train_from_npz`, quality
tracking on) on the train split of the real `sample` source (10 real Kaggle chest X-rays: 5 NORMAL, 5 PNEUMONIA),
for the same number of generator steps and the same seed. The JSON holds, per recipe, the steps, the wall time,
the quality curve (quality.csv: diversity, train coverage, fidelity, KID, PRDC) and the scores of the generator the
quality rule kept (generator-best.keras); `--grid` writes one real-vs-SYNTHETIC figure with a block per recipe.

    python benchmarks/xray_recipes.py --out assets/results/xray_recipes.json --grid assets/xray-recipes-grid.png
    python benchmarks/xray_recipes.py --quick          # 300 steps per recipe: a pipeline check, labelled as such
    python benchmarks/xray_recipes.py --recipes xray,xray:g_norm=none   # a recipe, and a variant with fields changed
    python benchmarks/xray_recipes.py --recipes xray --carry-over "xray-v1,xray:x=true@xray" --carry-from OLD.json
                                                     # reuse unchanged entries; NAME@OLD: measured as OLD, same config

A variant is RECIPE:FIELD=VALUE[+FIELD=VALUE...] (VALUE read as JSON, else as a string): the recipe's fields with
those changed, named by that string in the JSON, the table and the grid.

What 10 training images can show: whether a recipe collapses (one image per class), whether it reproduces the
variety of the images it saw (diversity, train coverage) and draws the intended class (fidelity). What they cannot
show: whether a generator generalises to new patients, or whether its images help a classifier; KID and PRDC
against the 4 held-out val images are computed and recorded, but 4 images make them noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


DEFAULT_STEPS = 3000
QUICK_STEPS = 300
CAN_SHOW = ("10 training images (5 per class) can show whether a recipe collapses and whether it reproduces the variety "
            "and the class of the images it saw; they cannot show generalisation to new patients or whether the images "
            "help a classifier. KID and PRDC use the 4 held-out val images and are noisy.")


def variant_fields(name: str) -> dict[str, Any]:
    """The GANConfig fields of a recipe name or a variant "RECIPE:FIELD=VALUE+..." (VALUE JSON, else a string)."""
    import json

    from cxr_utils.config import recipe
    from cxr_utils.errors import UserError

    base, _, changes = name.partition(":")
    fields = recipe(base.strip())
    for item in (c for c in changes.split("+") if c.strip()):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--recipes {name}: expected RECIPE:FIELD=VALUE[+FIELD=VALUE...], e.g. xray:g_norm=none")
        try:
            fields[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[key.strip()] = value.strip()
    return fields


def recipe_config(name: str, steps: int, n_train: int, seed: int, **overrides: Any) -> Any:
    """The GANConfig of one recipe (or variant) for `steps` generator steps on n_train images (batch fitted to the
    data)."""
    from cxr_utils.config import GANConfig
    from cxr_utils.gan.device import epoch_steps
    from cxr_utils.gan.fit import fit_batch_size

    cfg = GANConfig(seed=seed).with_fields(variant_fields(name))
    bs = fit_batch_size(n_train, cfg.batch_size)
    spe = max(1, epoch_steps(n_train, bs))
    every = max(1, round(steps / spe / 6))
    # six evaluations per run; checkpoints and sample grids at the same cadence (not every one-step epoch)
    cadence = dict(batch_size=bs, epochs=max(1, round(steps / spe)), eval_every=every, checkpoint_every=every,
                   sample_every=every)
    return cfg.replace(**{**cadence, **overrides})  # an override (a finer eval_every, say) wins over the cadence


def run_folder_name(name: str) -> str:
    """The run folder of a recipe or variant under --work-dir ("xray:g_norm=none" -> "xray--g_norm-none")."""
    return name.replace(":", "--").replace("=", "-").replace("+", "--")


def run_recipe(name: str, npz: Path, n_train: int, work: Path, steps: int, seed: int, **overrides: Any) -> dict[str, Any]:
    """Train one recipe into work/<name>; its steps, seconds, quality curve and kept generator's scores."""
    from cxr_utils.gan import fit, tracker

    cfg = recipe_config(name, steps, n_train, seed, **overrides)
    run_dir = work / run_folder_name(name)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    out = fit.train_from_npz(npz, run_dir, cfg, progress=False)
    seconds = time.perf_counter() - t0
    rows = tracker.read_rows(run_dir / tracker.QUALITY_FILE)
    best = tracker.load_best(run_dir)
    # the ratios to the real-vs-real baseline and the row's bars: meets_bar judges a curve point as learned_check does,
    # and select_best re-ranks it as the trainer did (carry_over)
    keep = ("epoch", "step", *tracker.SUMMARY_KEYS, "kid_balanced", "train_covered", "train_images",
            "diversity_vs_real", "train_coverage_vs_real", "fidelity_vs_real", "hf_share_vs_real", "stripe_vs_real",
            "bars", "alarm")
    curve = [{k: _val(r.get(k)) for k in keep} for r in rows]
    res = {"recipe": name, "fields": dict(sorted(variant_fields(name).items())), "steps": int(out["step"]),
           "seconds": round(seconds, 1), "train_seconds": round(out["train_seconds"], 1), "precision": out["precision"],
           "batch_size": cfg.batch_size, "eval_every": cfg.eval_every, "label_prior": cfg.label_prior, "curve": curve,
           "best": best, "last": curve[-1] if curve else None, "run_dir": str(run_dir)}
    return add_time_to_bar(res, run_dir)


def add_time_to_bar(res: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Each curve point gets the training seconds up to its epoch (the sum of metrics.csv's epoch times, so the
    evaluations themselves are not counted), and the result gets `time_to_bar`: the first evaluation whose scores
    reach the "learned" bar (None if none did)."""
    from cxr_utils.gan.fit import read_metrics
    from cxr_utils.gan.run_folder import RunFolder

    elapsed, total = {}, 0.0
    for row in read_metrics(RunFolder(run_dir).metrics_csv):
        total += float(row["seconds"])
        elapsed[int(row["epoch"])] = total
    first = None
    for pt in res["curve"]:
        pt["train_seconds"] = round(elapsed[pt["epoch"]], 1) if pt["epoch"] in elapsed else None
        if first is None and meets_bar(pt):
            first = {"epoch": pt["epoch"], "step": pt["step"], "train_seconds": pt["train_seconds"]}
    res["time_to_bar"] = first
    return res


def _val(v: Any) -> Any:
    if v in (None, ""):
        return None
    try:
        return int(v) if str(v).lstrip("-").isdigit() else float(v)
    except ValueError:
        return v


def save_grid(path: Path, npz: Path, results: list[dict[str, Any]], n: int = 8, seed: int = 0) -> Path:
    """One figure: the real training images per class, then n SYNTHETIC images per class from each recipe's kept
    generator (the same noise for every recipe)."""
    from cxr_utils import data, drawing
    from cxr_utils.config import CLASS_NAMES
    from cxr_utils.gan import generate, runs

    x, y = data.load(npz).subset("train")
    rows, titles = [], []
    for c, cname in enumerate(CLASS_NAMES):
        rows.append(x[y == c][:n])
        titles.append(f"real {cname}\n(train)")
    for r in results:
        g, _ = runs.load_run(r["run_dir"], which="best")
        imgs = generate.gallery(g, n, len(CLASS_NAMES), seed=seed)
        ep = (r.get("best") or {}).get("epoch", "last")
        label = r["recipe"].replace(":", "\n").replace("+", "\n")  # a variant's changes, one per line
        for c, cname in enumerate(CLASS_NAMES):
            rows.append(imgs[c])
            titles.append(f"{label}\nSYNTHETIC {cname}\n(epoch {ep})")
    fig = drawing.image_grid(rows, titles, title="Real sample X-rays vs SYNTHETIC ones from each recipe's kept generator "
                                               f"({results[0]['steps']} steps each)", cell_inches=0.8)
    drawing.save_figure(fig, path, dpi=80)
    drawing.close(fig)
    return path


def run(recipes: list[str] | None = None, steps: int = DEFAULT_STEPS, seed: int = 0, work: Path | None = None,
        grid: Path | None = None, quick: bool = False, partial: Path | None = None,
        carried: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train every recipe (None: all; [] none) on the sample's train split; the JSON-ready result, with the `carried`
    entries after the measured ones (those with a `run_dir` are drawn in the grid too)."""
    from cxr_utils import data
    from cxr_utils.config import RECIPES, smoke_mode
    from cxr_utils.gan import tracker

    smoke = smoke_mode()  # read once, when the benchmark runs
    recipes = list(RECIPES) if recipes is None else recipes
    carried = [dict(r) for r in carried or []]
    npz = Path(data.prepare(source="sample", size=64, progress=False))
    own = work is None
    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="xray-recipes-"))
    overrides: dict[str, Any] = {}
    if smoke:  # CI: the same code path on tiny models
        from cxr_utils.config import smoke_overrides

        overrides = {k: v for k, v in smoke_overrides().items() if k not in ("epochs", "batch_size")}
    x, y = data.load(npz).subset("train")
    head = {"benchmark": "x-ray recipes on the real sample (issue 10)", "data": f"sample source, train split: {len(y)} real "
            f"Kaggle chest X-rays ({int((y == 0).sum())} NORMAL, {int((y == 1).sum())} PNEUMONIA), 64 px",
            "steps": steps, "seed": seed, "quick": quick, "smoke": smoke, "can_show": CAN_SHOW,
            "bar": {"diversity": tracker.LEARNED_DIVERSITY, "train_coverage": tracker.LEARNED_TRAIN_COVERAGE,
                    "of": int(len(y))}}
    try:
        results = []
        for name in recipes:
            print(f"[xray-recipes] {name}: {steps} steps ...", file=sys.stderr, flush=True)
            results.append(run_recipe(name, npz, len(y), work, steps, seed, **overrides))
            r = results[-1]
            b = (r["best"] or {}).get("scores", {})
            print(f"[xray-recipes] {name}: {r['seconds']:.0f} s; kept epoch {(r['best'] or {}).get('epoch')}: "
                  f"diversity {b.get('diversity')}, train coverage {b.get('train_covered')}/{b.get('train_images')}",
                  file=sys.stderr, flush=True)
            if partial is not None:  # what is measured so far survives an interrupted benchmark
                from cxr_utils.files import atomic_write_json

                atomic_write_json(partial, {**head, "partial": True,
                                            "recipes": [{k: v for k, v in r.items() if k != "run_dir"} for r in results]})
        drawn = results + [r for r in carried if r.get("run_dir")]
        for r in carried:
            if r.get("run_dir"):  # its kept generator is in the new grid: the earlier picture is not needed
                r.update(grid=None, in_grid=True)
        if grid is not None and drawn:
            save_grid(Path(grid), npz, drawn)
            head["grid_sha256"] = hashlib.sha256(Path(grid).read_bytes()).hexdigest()  # which figure is this run's
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    for r in results + carried:
        r.pop("run_dir", None)
    return {**head,
            "grid": str(Path(grid).resolve().relative_to(ROOT)) if grid and Path(grid).resolve().is_relative_to(ROOT) else
            (str(grid) if grid else None), "recipes": results + carried}


def meets_bar(scores: dict[str, Any] | None) -> bool:
    """True if a generator's scores reach the "learned" bar (cxr_utils.gan.tracker.learned_check)."""
    from cxr_utils.gan.tracker import learned_check

    return learned_check(scores)[0]


def carry_over(names: list[str], old_jsons: Path | list[Path], steps: int, seed: int, grid: Path | None,
               work: Path | list[Path] | None = None, note: str | None = None) -> list[dict[str, Any]]:
    """Entries of earlier measurements, reused for recipes whose configuration, steps and seed did not change (the seed
    recipe takes 25 minutes); each says so. NAME@OLD reuses the entry measured as OLD (a recipe whose fields changed
    since: today's `xray` is the earlier `xray:spectral_all=false`) if OLD's fields resolve to NAME's configuration.
    The first of `old_jsons` with a matching entry gives it. The earlier grid, the only picture of their generators,
    is kept beside the new one (<grid>-earlier.png) before the new grid replaces it; an entry whose run folder is in
    `work` (the earlier runs' --work-dir, the first that has it) gets `run_dir`, so the new grid draws its kept
    generator too. An entry whose quality curve today's kept-generator rule would rank differently is refused (its
    scores and picture belong to another generator)."""
    from cxr_utils.config import GANConfig
    from cxr_utils.errors import UserError
    from cxr_utils.files import read_json

    olds = [(Path(j), read_json(j)) for j in ([old_jsons] if isinstance(old_jsons, (str, Path)) else old_jsons)]
    out = []
    for item in names:
        name, _, old_name = item.partition("@")
        name, old_name = name.strip(), (old_name or name).strip()
        want = GANConfig().with_fields(variant_fields(name))
        found = [(j, old, r) for j, old in olds for r in old.get("recipes", []) if r["recipe"] == old_name]
        if not found:
            raise UserError(f"--carry-over {item}: {', '.join(str(j) for j, _ in olds)} has no {old_name} entry")
        # the configuration the recipe resolves to, not the list of fields it names (a recipe may name more fields
        # later, e.g. `seed` names every field another recipe changes, at their unchanged defaults)
        same = [(j, old, r) for j, old, r in found if GANConfig().with_fields(r.get("fields") or {}) == want
                and r.get("steps") == steps and old.get("seed") == seed]
        if not same:
            raise UserError(f"--carry-over {item}: its fields, steps or seed changed since {found[0][0]} was measured; "
                            "run it")
        old_json, old, r = same[0]
        kept, today = (r.get("best") or {}).get("epoch"), _kept_today(r)
        if kept is not None and today is not None and int(today) != int(kept):
            raise UserError(f"--carry-over {item}: today's kept-generator rule (tracker.select_best) keeps epoch "
                            f"{today} of its quality curve, the entry kept epoch {kept}: the rule changed since "
                            f"{old_json} was measured; run it")
        # carried twice, it still names the run that measured it (and the picture of that run)
        # a partial JSON (an interrupted run) names no command: `note` says where and when it was measured
        src = f"`{old['command']}`" if old.get("command") else f"{old_json}{'; ' + note if note else ''}"
        as_ = f" as `{old_name}`" if old_name != name else ""
        text = r.get("carried_over") or (f"not re-run: measured earlier{as_} with the same configuration, steps and "
                                         f"seed ({src})")
        if r.get("label_prior") != want.label_prior:  # a default that changed since: GANConfig cannot tell
            prior = r.get("label_prior") or "balanced, from before label_prior existed"
            text += f"; its generated labels were drawn {prior}, today's default is {want.label_prior}"
            if "generated labels" in (r.get("carried_over") or ""):
                text = r["carried_over"]
        folder = _measured_in(r, [] if work is None else [work] if isinstance(work, (str, Path)) else work)
        # drawn in the new grid from the run that measured it, or shown by the picture it was in: its own if carried
        # before, else the earlier JSON's grid (kept under another name), also for an entry carried before that was
        # drawn in that grid (in_grid) from a run folder not given now
        drawn_before = bool(r.get("carried_over")) and bool(r.get("in_grid"))
        shown = None if folder is not None or (r.get("carried_over") and not drawn_before) else _kept_grid(old, grid)
        entry = {**r, "recipe": name, "fields": dict(sorted(variant_fields(name).items())), "carried_over": text,
                 "grid": r.get("grid") if r.get("carried_over") and not drawn_before else (str(shown) if shown else None)}
        if drawn_before and folder is None:
            entry["in_grid"] = False
        if folder is not None:
            entry["run_dir"] = str(folder)
        out.append(entry)
    return out


def _kept_today(entry: dict[str, Any]) -> Any:
    """The epoch today's kept-generator rule picks from an entry's quality curve (None: no curve to rank)."""
    from cxr_utils.gan import tracker

    best = tracker.select_best(entry.get("curve") or [])
    return None if best is None else best.get("epoch")


def _measured_in(entry: dict[str, Any], works: list[Path]) -> Path | None:
    """The run folder under one of `works` that measured `entry`: the one whose best.json is the entry's kept
    generator (its epoch and scores), whatever the folder is named (a name can mean another configuration later)."""
    from cxr_utils.gan import tracker

    for w in works:
        for folder in sorted(Path(w).iterdir()) if Path(w).is_dir() else []:
            if (folder / tracker.BEST_FILE).is_file() and tracker.load_best(folder) == entry.get("best"):
                return folder
    return None


def _kept_grid(old: dict[str, Any], grid: Path | None) -> Path | None:
    """The earlier JSON's grid copied to <grid>-earlier.png, or -earlier-2.png, ... when that name holds another
    earlier picture (one that entries carried before still show); a copy with the same bytes is reused. Its path
    relative to the repository, or None (no grid, or the file now holds another run's figure: `grid_sha256`)."""
    if grid is None or not old.get("grid") or not (ROOT / old["grid"]).is_file():
        return None
    picture = (ROOT / old["grid"]).read_bytes()
    if old.get("grid_sha256") not in (None, hashlib.sha256(picture).hexdigest()):
        return None  # a later run has drawn another figure there: the picture of this entry is gone
    n = 1
    while True:
        kept = grid.with_name(grid.stem + "-earlier" + (f"-{n}" if n > 1 else "") + grid.suffix)
        if not kept.is_file():
            kept.write_bytes(picture)
            break
        if kept.read_bytes() == picture:
            break
        n += 1
    return kept.resolve().relative_to(ROOT) if kept.resolve().is_relative_to(ROOT) else kept


def finish_partial(args: argparse.Namespace, argv: list[str] | None) -> int:
    """--from-partial: the grid and final JSON from the recipes an interrupted run finished (named as such)."""
    from cxr_utils import data
    from cxr_utils.config import RECIPES
    from cxr_utils.files import atomic_write_json, read_json

    out = Path(args.out) if args.out else ROOT / "runs" / "xray_recipes.json"
    part = read_json(out.with_suffix(".partial.json"))
    work = Path(args.work_dir)
    # partial files written before time to bar existed get it from the run folders
    done = [{**r, "run_dir": str(work / run_folder_name(r["recipe"]))} for r in part["recipes"]]
    done = [r if "time_to_bar" in r else add_time_to_bar(r, Path(r["run_dir"])) for r in done]
    wanted = [r.strip() for r in args.recipes.split(",")] if args.recipes else list(RECIPES)
    npz = Path(data.prepare(source="sample", size=64, progress=False))
    if args.grid:
        save_grid(Path(args.grid), npz, done)
    for r in done:
        r.pop("run_dir")
    grid = Path(args.grid).resolve() if args.grid else None
    res = {**{k: v for k, v in part.items() if k != "partial"}, "recipes": done,
           "not_run": [w for w in wanted if w not in {r["recipe"] for r in done}],
           "grid": str(grid.relative_to(ROOT)) if grid and grid.is_relative_to(ROOT) else (str(grid) if grid else None),
           "command": "python benchmarks/xray_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(out, res)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"wrote {out} ({len(done)} recipes; not run: {', '.join(res['not_run']) or 'none'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: run, write the JSON atomically, print one line per recipe."""
    from cxr_utils.files import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=None, help="comma-separated recipe names (default: all)")
    ap.add_argument("--steps", type=int, default=None, help=f"generator steps per recipe (default {DEFAULT_STEPS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per recipe (a pipeline check)")
    ap.add_argument("--out", default=None, help="JSON file (default runs/xray_recipes.json)")
    ap.add_argument("--grid", default=None, help="write the real-vs-SYNTHETIC figure here (PNG)")
    ap.add_argument("--work-dir", default=None, help="keep the run folders here (default: a temp folder, removed)")
    ap.add_argument("--carry-over", default=None, metavar="RECIPES",
                    help="comma-separated recipes not to re-run: their entries come from --carry-from, if their "
                         "configuration, steps and seed did not change (labelled as carried over); NAME@OLD reuses the "
                         "entry measured as OLD when OLD's fields are NAME's configuration today")
    ap.add_argument("--carry-from", action="append", default=None,
                    help="an earlier JSON for --carry-over (repeatable: the first with a matching entry gives it; "
                         "default: --out)")
    ap.add_argument("--carry-work-dir", action="append", default=None,
                    help="the --work-dir of an earlier measurement (repeatable): carried recipes whose run folder is "
                         "there are drawn in the new grid")
    ap.add_argument("--carry-note", default=None,
                    help="said of carried entries whose JSON names no command (a partial JSON): when and how measured")
    ap.add_argument("--from-partial", action="store_true",
                    help="finish an interrupted run: the recipes in OUT's .partial.json (run folders in --work-dir) get "
                         "their grid and the final JSON; the recipes not reached are listed as not run")
    args = ap.parse_args(argv)
    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    if args.from_partial:
        if not args.work_dir:
            print("error: --from-partial: give the --work-dir of the interrupted run (its run folders are needed)",
                  file=sys.stderr)
            return 2
        return finish_partial(args, argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes is not None else None
    out = Path(args.out) if args.out else ROOT / "runs" / "xray_recipes.json"
    carried: list[dict[str, Any]] = []
    from cxr_utils.config import GANConfig
    from cxr_utils.errors import UserError

    try:  # every name and variant resolves to a valid config before any training
        for name in recipes or []:
            GANConfig().with_fields(variant_fields(name))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.carry_over:
        try:
            carried = carry_over([r.strip() for r in args.carry_over.split(",")],
                                 [Path(f) for f in args.carry_from] if args.carry_from else [out], steps, args.seed,
                                 Path(args.grid) if args.grid else None,
                                 [Path(w) for w in args.carry_work_dir or []], args.carry_note)
        except (UserError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    res = run(recipes, steps, args.seed, Path(args.work_dir) if args.work_dir else None,
              Path(args.grid) if args.grid else None, args.quick, partial=out.with_suffix(".partial.json"),
              carried=carried)
    from cxr_utils.config import RECIPES

    res["not_run"] = [n for n in RECIPES if n not in {r["recipe"] for r in res["recipes"]}]
    res["command"] = "python benchmarks/xray_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_json(out, res)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    for r in res["recipes"]:
        b = (r["best"] or {}).get("scores", {})
        hf = "n/a" if b.get("hf_share_vs_real") is None else f"{b['hf_share_vs_real']:.2f}x"
        stripe = "n/a" if b.get("stripe_vs_real") is None else f"{b['stripe_vs_real']:.2f}x"
        print(f"{r['recipe']:>16s}: kept epoch {(r['best'] or {}).get('epoch')}, diversity {b.get('diversity')}, "
              f"{b.get('train_covered')}/{b.get('train_images')} training images covered, fidelity {b.get('fidelity')}, "
              f"artefact {hf} real, stripes {stripe} real, bar {'met' if meets_bar(b) else 'missed'}; "
              f"{r['seconds']:.0f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
