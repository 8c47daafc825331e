"""The whole evaluation of notebook 04 in one call: every VGG16 protocol, results.json, the generative metrics
(metrics.json) and the figures.

`python -m cxr_utils study` and notebooks/04_evaluate_vgg16.ipynb both call `run_study`, so a headless run writes the
same results.json as the notebook on the same inputs (only the recorded "command" differs). Every classifier seed is
saved to OUT/entries as soon as it is tested (`study_store`), so a study killed at any moment resumes with what is
done, and results.json is assembled from those entries: a resumed study writes what an uninterrupted one does, apart
from the fields in VARIES.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import drawing
from ..errors import UserError
from ..files import atomic_write_bytes, atomic_write_json
from ..metrics import classification, paired
from . import charts, classifier, inputs, study_store, tables
from . import protocols as proto  # `protocols` is run_study's parameter
from .study_store import entry_name

RESULTS_JSON = "results.json"
METRICS_JSON = "metrics.json"
# the figures a study-grade run copies into assets/ for the README
CURATED = ("04_protocol_comparison.png", "04_roc.png", "04_confusion_tstr.png", "04_history_tstr.png",
           "04_paired_differences.png", "04_ratio_sweep.png")
PAIRED_FIGURE = "04_paired_differences.png"
RATIO_FIGURE = "04_ratio_sweep.png"
DEFAULT_RATIOS = (1.0,)  # one classifier per protocol; the sweep 0,0.5,1,2 costs about 3x (see README "Evaluation")
# fields of results.json that legitimately differ between two runs on the same inputs: how the run was started, and
# the wall time of each classifier seed (a reused entry keeps the seconds of the run that trained it)
VARIES = ("command", "seconds")
RATIO_ZERO = ("at synthetic ratio 0, augment and pretrain train on the real images only: that is trtr, whose entry is "
              "their ratio-0 point (not retrained); tstr has no ratio-0 point (nothing to train on)")


@dataclass
class Study:
    """What `run_study` computed and where it wrote it."""

    results: list[dict[str, Any]]  # one protocols.run_protocol result per (protocol, synthetic folder, ratio); trtr once
    seed_check: dict[str, Any]  # the seed repository's headline checked against every confusion matrix
    metrics: dict[str, Any]  # generative.run_metrics of the first synthetic folder: FID/KID/PRDC/memorization/fidelity
    results_json: Path
    metrics_json: Path
    figures: dict[str, Path] = field(default_factory=dict)  # file name -> PNG written
    headline: list[dict[str, Any]] = field(default_factory=list)  # trtr + each protocol at folder 1, headline ratio
    across_folders: list[dict[str, Any]] = field(default_factory=list)  # per (protocol, ratio): spreads, pooled vs trtr
    ratios: list[float] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    resume: study_store.Resume | None = None  # what OUT/entries held before training (reused, set aside)


def parse_protocols(protocols: str | Sequence[str]) -> list[str]:
    """'trtr,tstr' or a sequence -> a list of known protocols in the given order; UserError on an unknown one."""
    names = [p.strip() for p in (protocols.split(",") if isinstance(protocols, str) else protocols) if p.strip()]
    bad = [p for p in names if p not in proto.PROTOCOLS]
    if bad or not names:
        raise UserError(f"--protocols {','.join(names) or '(empty)'}: use a comma-separated list of "
                        f"{', '.join(proto.PROTOCOLS)}")
    return list(dict.fromkeys(names))


def _items(value: str | float | os.PathLike | Sequence[Any]) -> list[str]:
    """'a,b', ['a', 'b,c'] or one value -> ['a', 'b', ...] (stripped, empty items dropped)."""
    seq = [value] if isinstance(value, (str, float, int, os.PathLike)) else list(value)
    return [p.strip() for v in seq for p in str(os.fspath(v) if isinstance(v, os.PathLike) else v).split(",") if p.strip()]


def parse_ratios(ratios: str | float | Sequence[Any]) -> list[float]:
    """'0,0.5,1,2', a number or a sequence -> sorted distinct synthetic ratios (>= 0); UserError otherwise."""
    items = _items(ratios)
    try:
        vals = sorted({float(v) for v in items})
    except ValueError:
        vals = []
    if not vals or any(not np.isfinite(v) or v < 0 for v in vals):
        raise UserError(f"--synthetic-ratio {','.join(items) or '(empty)'}: use numbers >= 0, e.g. 0,0.5,1,2 "
                        f"(synthetic images per class = ratio x that class's real training images)")
    return vals


def parse_folders(synthetic: str | os.PathLike | Sequence[Any]) -> list[str]:
    """One synthetic folder, 'A,B' or a sequence -> the distinct folders in the given order (GAN runs to compare)."""
    folders = list(dict.fromkeys(_items(synthetic)))
    if not folders:
        raise UserError("--synthetic: name at least one synthetic folder (written by `python -m cxr_utils sample`)")
    return folders


def headline_ratio(ratios: Sequence[float]) -> float | None:
    """The ratio the per-protocol figures show: 1 if swept, else the non-zero ratio nearest 1 (None if only 0)."""
    nonzero = [r for r in ratios if r > 0]
    return min(nonzero, key=lambda r: (abs(r - 1.0), r)) if nonzero else None


def plan_entries(protocols: Sequence[str], folders: Sequence[str],
                 ratios: Sequence[float]) -> list[tuple[str, str | None, float | None]]:
    """(protocol, synthetic folder, ratio) of every classifier to train: trtr once (it reads no synthetic folder);
    every other protocol per folder and per ratio > 0. At ratio 0, augment and pretrain train on the real images
    only, which IS trtr: its entry is their ratio-0 point, not retrained; tstr at ratio 0 has nothing to train on."""
    plan: list[tuple[str, str | None, float | None]] = [("trtr", None, None)] if "trtr" in protocols else []
    for p in protocols:
        if p != "trtr":
            plan += [(p, f, r) for f in folders for r in ratios if r > 0]
    return plan


def _probs(entries: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    return [np.asarray(e["test_probs"], np.float64) for r in entries for e in r["per_seed"]]


def compare_to_trtr(results: Sequence[dict[str, Any]], n_boot: int, seed: int = 0) -> list[dict[str, Any]]:
    """Set every entry's "vs_trtr" (paired difference from trtr on the same test images, paired.paired_difference) and
    return, per (protocol, ratio), the spread across synthetic folders beside the spread across classifier seeds and
    the difference from trtr pooled over the folders."""
    trtr = next((r for r in results if r["protocol"] == "trtr"), None)
    method = paired.PAIRED_METHOD.format(n=n_boot)

    def vs(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        if trtr is None:
            return None
        return {**paired.paired_difference(trtr["test_labels"], _probs(entries), _probs([trtr]), entries[0]["threshold"],
                                          n_boot, seed), "method": method}

    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for r in results:
        r["vs_trtr"] = None if r is trtr else vs([r])
        if r is not trtr:
            groups.setdefault((r["protocol"], r.get("synthetic_ratio")), []).append(r)
    across = []
    for (protocol, ratio), entries in groups.items():
        across.append({
            "protocol": protocol, "synthetic_ratio": ratio, "synthetic": [r.get("synthetic") for r in entries],
            "seeds": [len(r["seeds"]) for r in entries],
            "metrics": {k: paired.spread_across_folders([[e.get(k) for e in r["per_seed"]] for r in entries])
                        for k in classification.METRICS},
            "vs_trtr_pooled": vs(entries) if len(entries) > 1 else (entries[0]["vs_trtr"]),
        })
    return across


def run_study(npz: str | os.PathLike, synthetic: str | os.PathLike | Sequence[Any], out: str | os.PathLike, *,
              protocols: str | Sequence[str] = proto.PROTOCOLS, weights: str = "auto", seeds: int | None = 1,
              epochs: int | None = None, input_size: int | None = None, bootstrap: int | None = None,
              extractor: str = "auto", smoke: bool = False, figures_dir: str | os.PathLike | None = None,
              verbose: int = 0, command: str | None = None, log: Callable[[str], None] = print,
              ratios: str | float | Sequence[Any] = DEFAULT_RATIOS, precision: str | None = None,
              deterministic: bool | None = None, fresh: bool = False) -> Study:
    """Run every protocol at every synthetic ratio on every synthetic folder (GAN runs), the paired differences from
    trtr and the generative metrics; write OUT/results.json, OUT/metrics.json and the figures (into figures_dir,
    default OUT/figures). epochs/input_size/bootstrap/precision/deterministic of None keep the (smoke) defaults; seeds
    None means 3 on the full data set and 1 on a small source or in smoke mode.

    Resumes: every classifier seed is saved to OUT/entries as soon as it is tested, and a rerun with the same inputs
    reuses those (study_store; entries made with other inputs are set aside, never mixed); fresh deletes them first.

    The keyword-only parameters after `out` are the `study` command's flags one for one (notebook 04 and the CLI pass
    them by these names), so they stay one flat list: the notebook cell, the CLI flags and this signature read alike."""
    names = parse_protocols(protocols)
    folders = parse_folders(synthetic)
    ratio_list = parse_ratios(ratios)
    out = Path(out)
    cfg = classifier.eval_config(smoke, epochs=epochs, input_size=input_size, bootstrap=bootstrap, precision=precision,
                                 deterministic=deterministic)
    inp = _load_inputs(npz, names, folders, ratio_list, cfg, seeds, smoke, command)
    _log_plan(inp, npz, log)
    results, resume = _train_all(inp, out, weights, verbose, fresh, log)
    across = compare_to_trtr(results, cfg.bootstrap, cfg.seed)
    hr = headline_ratio(ratio_list)
    headline = [r for r in results if r["protocol"] == "trtr"
                or (r.get("synthetic") == folders[0] and r.get("synthetic_ratio") == hr)]
    seed_check = tables.search_confusion_matrices(**tables.SEED_CLAIM, **tables.KAGGLE_TEST)
    results_json = atomic_write_json(out / RESULTS_JSON, {
        "protocols": results, "across_folders": across, "synthetic_folders": folders, "synthetic_ratios": ratio_list,
        "headline_ratio": hr, "ratio_zero": RATIO_ZERO, "paired_method": paired.PAIRED_METHOD.format(n=cfg.bootstrap),
        "seed_claim_check": seed_check})
    figures_dir = Path(figures_dir) if figures_dir is not None else out / "figures"
    figures = _protocol_figures(results, headline, across, ratio_list, figures_dir)
    gen = _generative_metrics(inp, out / METRICS_JSON, extractor, smoke, command, log)
    figures.update(_closest_pairs(inp, gen, 4 if smoke else 8, figures_dir))
    return Study(results, seed_check, gen, results_json, out / METRICS_JSON, figures, headline, across, ratio_list,
                 folders, resume)


@dataclass(frozen=True)
class _Inputs:
    """What a study reads and plans, loaded and checked before any classifier trains."""

    real: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images, labels)
    prov: dict[str, Any]  # the real cache's provenance, with the command and smoke flag
    syn: dict[str, Any]  # synthetic folder -> ((images, labels), its provenance)
    folders: list[str]
    ratios: list[float]
    plan: list[tuple[str, str | None, float | None]]  # plan_entries
    cfg: classifier.EvalConfig
    seeds: int


def _load_inputs(npz: str | os.PathLike, names: Sequence[str], folders: list[str], ratios: list[float],
                 cfg: classifier.EvalConfig, seeds: int | None, smoke: bool, command: str | None) -> _Inputs:
    """Load the real cache and every synthetic folder, settle the seed count, plan the classifiers, and check that
    every folder holds enough images for the largest ratio (a UserError before any training)."""
    real, prov = inputs.load_real(npz)
    prov.update(command=command, smoke=bool(smoke))
    size = int(real["test"][0].shape[1])
    syn = {f: inputs.load_synthetic_folder(f, size) for f in folders}
    if seeds is None:  # 3 seeds where the numbers mean something; a small source is a pipeline check
        seeds = 3 if prov["full_dataset"] and not smoke else 1
    plan = plan_entries(names, folders, ratios)
    if any(p != "trtr" for p in names) and max(ratios) > 0:
        for f in folders:  # every folder holds enough for the largest ratio, checked before any training
            proto.select_synthetic(syn[f][0], real["train"][1], max(ratios), f)
    return _Inputs(real, prov, syn, folders, ratios, plan, cfg, seeds)


def _log_plan(inp: _Inputs, npz: str | os.PathLike, log: Callable[[str], None]) -> None:
    """The study's opening lines: the real data, the synthetic folders, the classifier and the plan."""
    prov = inp.prov
    log(f"real data  : {npz} (source {prov['source']}, {prov['n_images']} images; full data set: {prov['full_dataset']})")
    log(f"real splits: { {s: inputs._class_counts(y) for s, (_, y) in inp.real.items()} }")
    for f in inp.folders:
        log(f"synthetic  : {f} {inp.syn[f][1]['n_synthetic']}")
    log(f"classifier : {inp.cfg}")
    log(f"plan       : {len(inp.plan)} classifier(s) x {inp.seeds} seed(s): "
        + ", ".join(_entry_name(*e, inp.folders) for e in inp.plan)
        + ("; ratio 0 of augment/pretrain is trtr (not retrained)" if 0.0 in inp.ratios else ""))


def _train_all(inp: _Inputs, out: Path, weights: str, verbose: int, fresh: bool,
               log: Callable[[str], None]) -> tuple[list[dict[str, Any]], study_store.Resume]:
    """Every planned classifier, each seed saved to OUT/entries as soon as it is tested (entries done earlier on the
    same inputs reused); returns the protocol results in plan order and what the store held before."""
    results = []
    resolved = classifier.resolve_weights(weights)  # once for every protocol: offline, each attempt waits ~15 s
    store, resume, folder_sha, idents = _resume(out, inp, resolved, fresh, log)
    cfg, seeds = inp.cfg, inp.seeds
    for protocol, folder, ratio in inp.plan:
        log(f"== {_entry_name(protocol, folder, ratio, inp.folders)} ==")
        entry_prov = {**inp.prov, **(inp.syn[folder][1] if folder else
                                     {"synthetic": None, "n_synthetic": None, "generator": None})}
        keys = {cfg.seed + i: idents[(protocol, folder, ratio, cfg.seed + i)] for i in range(seeds)}

        def save(entry: dict[str, Any], keys: dict[int, dict[str, Any]] = keys, folder: str | None = folder) -> None:
            path = store.write(keys[entry["seed"]], entry, folder, folder_sha.get(folder) if folder else None)
            log(f"  saved {path}")

        done = {sd: resume.done[entry_name(k)] for sd, k in keys.items() if entry_name(k) in resume.done}
        options = proto.RunOptions(weights, seeds, cfg, verbose, log, resolved, done, on_seed=save)
        res = proto.run_protocol(protocol, inp.real, inp.syn[folder][0] if folder else None,
                                 1.0 if ratio is None else ratio, folder, entry_prov, options)
        for note in res["notes"]:
            log(f"  note: {note}")
        results.append(res)
    if not all(classification.counts_consistent(e) for r in results for e in r["per_seed"]):
        raise RuntimeError("a protocol's metrics disagree with its confusion counts")  # a bug, never user input
    return results, resume


def _save(figures: dict[str, Path], figures_dir: Path, fig: Any, name: str) -> None:
    """Write one figure into figures_dir, note it in `figures` and close it."""
    figures[name] = drawing.save_figure(fig, figures_dir / name)
    drawing.close(fig)


def _protocol_figures(results: Sequence[dict[str, Any]], headline: Sequence[dict[str, Any]],
                      across: Sequence[dict[str, Any]], ratios: Sequence[float], figures_dir: Path) -> dict[str, Path]:
    """The protocol comparison, each headline protocol's history and confusion matrix, the ROC curves, the paired
    differences (with trtr) and the ratio sweep (with several ratios)."""
    figures: dict[str, Path] = {}
    _save(figures, figures_dir, charts.protocol_comparison(headline), "04_protocol_comparison.png")
    for r in headline:
        _save(figures, figures_dir, charts.classifier_history(r), f"04_history_{r['protocol']}.png")
        _save(figures, figures_dir, charts.confusion_heatmap(r), f"04_confusion_{r['protocol']}.png")
    _save(figures, figures_dir, charts.roc_curves(headline), "04_roc.png")
    if any(r.get("vs_trtr") for r in results):
        _save(figures, figures_dir, charts.paired_differences(results, across), PAIRED_FIGURE)
    if len(ratios) > 1:
        _save(figures, figures_dir, charts.ratio_sweep(results, across), RATIO_FIGURE)
    return figures


def _generative_metrics(inp: _Inputs, path: Path, extractor: str, smoke: bool, command: str | None,
                        log: Callable[[str], None]) -> dict[str, Any]:
    """The generative metrics of the first folder, on the arrays the protocols read (the closest pairs index them),
    written to `path`."""
    from . import folder_metrics

    first = inp.folders[0]
    if len(inp.folders) > 1:
        log(f"note: generative metrics of the first synthetic folder only ({first})")
    gen = folder_metrics.metrics_of(inp.real, inp.syn[first][0], {**inp.prov, **inp.syn[first][1]}, first,
                                    folder_metrics.MetricsOptions(extractor=extractor, seed=0, smoke=smoke),
                                    out=path, command=command)
    for note in gen["notes"]:
        log(f"note: {note}")
    return gen


def _closest_pairs(inp: _Inputs, gen: dict[str, Any], n: int, figures_dir: Path) -> dict[str, Path]:
    """The n synthetic images of the first folder nearest a real training image, above those training images."""
    ex_name, ex_entry = next(iter(gen["extractors"].items()))
    pairs = ex_entry["overall"]["memorization"]["closest_pairs"][:n]
    first, x_train = inp.syn[inp.folders[0]][0], inp.real["train"][0]
    figures: dict[str, Path] = {}
    _save(figures, figures_dir,
          drawing.image_grid([[first[0][p["synthetic"]] for p in pairs], [x_train[p["train"]] for p in pairs]],
                             row_titles=["SYNTHETIC", "real train"],
                             title=f"closest pairs in {ex_name} features (distance "
                                   + ", ".join(f"{p['distance']:.2f}" for p in pairs) + ")"), "04_closest_pairs.png")
    return figures


def comparable(doc: Any, varies: Sequence[str] = VARIES) -> Any:
    """A results.json (or any part of it) without the fields that differ between runs on the same inputs, at any depth."""
    if isinstance(doc, dict):
        return {k: comparable(v, varies) for k, v in doc.items() if k not in varies}
    if isinstance(doc, list):
        return [comparable(v, varies) for v in doc]
    return doc


def _resume(out: Path, inp: _Inputs, resolved: tuple[Any, str, str | None], fresh: bool, log: Callable[[str], None],
            ) -> tuple[study_store.EntryStore, study_store.Resume, dict[str, str],
                       dict[tuple[str, str | None, float | None, int], dict[str, Any]]]:
    """The study's entry store, what it already holds for this plan (stale entries set aside, one line each), the
    digest of every synthetic folder and the identity of every planned classifier seed."""
    from ..metrics import imagenet

    store = study_store.EntryStore(out)
    if fresh and (n := store.clear()):
        log(f"study: fresh start: deleted {n} finished result(s) in {store.dir}")
    real, syn, cfg = inp.real, inp.syn, inp.cfg
    shared = study_store.shared_inputs(real, cfg, classifier.resolve_precision(cfg), resolved[1],
                                       imagenet.weights_source(resolved[0]))
    folder_sha = {f: study_store.array_digest(*syn[f][0]) for f in inp.folders}
    y_train = real["train"][1]
    subset_sha = {(f, r): study_store.array_digest(*proto.select_synthetic(syn[f][0], y_train, r, f))
                  for f, r in dict.fromkeys((f, r) for _, f, r in inp.plan if f is not None)}
    idents = study_store.planned_identities(shared, inp.plan, [cfg.seed + i for i in range(inp.seeds)], subset_sha)
    resume = store.scan({entry_name(k): k for k in idents.values()}, shared, folder_sha)
    for line in (study_store.stale_line(resume, store.dir), resume.line(store.dir)):
        if line:
            log(line)
    return store, resume, folder_sha, idents


def _entry_name(protocol: str, folder: str | None, ratio: float | None, folders: Sequence[str]) -> str:
    """'trtr', 'augment x1' or, with several folders, 'augment x1 [GAN run 2]'."""
    if folder is None:
        return protocol
    run = f" [GAN run {folders.index(folder) + 1}]" if len(folders) > 1 else ""
    return f"{protocol} x{ratio:g}{run}"


def publish_figures(results: Sequence[dict[str, Any]], figures_dir: str | os.PathLike, assets_dir: str | os.PathLike,
                    names: Sequence[str] = CURATED) -> list[str] | None:
    """Copy the curated figures into assets_dir (the README's figures) if every result is study-grade (ImageNet
    weights, full data set, not smoke) and return their names; None, and assets_dir left alone, otherwise."""
    if not all(tables.is_study_grade(r) for r in results):
        return None
    figures_dir, assets_dir = Path(figures_dir), Path(assets_dir)
    for name in names:
        if (figures_dir / name).is_file():
            atomic_write_bytes(assets_dir / name, (figures_dir / name).read_bytes())
    return list(names)
