"""Markdown for the README's Performance section, from the JSON that `python -m benchmarks` wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cxr_utils.files import read_json

from .digits_tstr import TARGET_RATIO, TARGET_SECONDS, target_met


def _met(r: dict[str, Any] | None) -> str:
    if not r or r.get("met") is None:
        return "n/a"
    return "met" if r["met"] else "**missed**"


def _err(s: str) -> str:
    """First line of an error, safe inside a table cell."""
    return (s.strip().splitlines() or ["?"])[0].replace("|", "/")[:160]


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _g(v: float | None, unit: str = "GFLOP/s") -> str:
    return "-" if v is None else f"{v / 1e9:,.0f} {unit}"


def _n(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.0f}{(' ' + unit) if unit else ''}"


def machine_line(m: dict[str, Any]) -> str:
    """One line naming the machine: CPU, cores, ISA flags, GPUs, library versions."""
    if not m:
        return "Machine: not recorded."
    flags = m.get("flags", {})
    shown = ", ".join(f"{k} {'yes' if flags.get(k) else 'no'}" for k in ("avx512f", "avx512_bf16", "amx_bf16") if k in flags)
    v = m.get("versions", {})
    gpus = m.get("gpus") or []
    return (f"Machine: {m.get('cpu_model', 'unknown CPU')}, {m.get('cores', '?')} cores, {m.get('memory_gib') or '?'} GiB; "
            f"{shown}; {'GPUs: ' + ', '.join(gpus) if gpus else 'no GPU'}; TensorFlow {v.get('tensorflow')}, "
            f"Keras {v.get('keras')}, OpenCV {v.get('cv2')}, Python {m.get('python')}.")


def _rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    p = d.get("prep") or {}
    if "error" in p:
        rows.append(("a. preparation", f"failed: {_err(p['error'])}", "", ""))
    elif p:
        nf = p.get("input", {}).get("files")
        rows.append((f"a. preparation of {nf} full-size real X-ray JPEGs, cxr_utils ({p['cxr_utils'].get('workers')} workers)",
                     _n(p["cxr_utils"]["images_per_second"], "img/s"), "", ""))
        rows.append(("a. same code, 1 worker", _n(p["cxr_utils_1_worker"]["images_per_second"], "img/s"), "", ""))
        rows.append(("a. keras.utils.image_dataset_from_directory, same size", _n(p["keras"]["images_per_second"], "img/s"), "", ""))
        fl = p.get("decode_floor")
        if fl:
            rows.append(("a. decode floor, OpenCV alone on 1 core: 1/8-scale / full-size decode",
                         f"{_n(fl['opencv_reduced_decode_1_core']['images_per_second'])} / "
                         f"{_n(fl['opencv_full_decode_1_core']['images_per_second'], 'img/s')}", "", ""))
        r = p.get("ratios", {}).get("cxr_vs_keras")
        rows.append(("a. cxr_utils / Keras", _x(r and r["value"]), f">= {r['target']:.0f}x" if r else "", _met(r)))
    t = d.get("train") or {}
    if "error" in t:
        rows.append(("b. train step", f"failed: {_err(t['error'])}", "", ""))
    elif t:
        c = t.get("config", {})
        what = f"{c.get('image_size')}x{c.get('image_size')}, batch {c.get('batch_size')}, default model"
        for name, rec in t.get("precisions", {}).items():
            rows.append((f"b. D+G train step {name} ({what})", f"{rec['images_per_second']:.1f} img/s "
                         f"({rec['seconds_per_step']:.2f} s/step)", "", ""))
        r = t.get("ratios", {})
        if "bf16_vs_fp32" in r:
            rows.append(("b. bf16 / fp32", _x(r["bf16_vs_fp32"]["value"]), f">= {r['bf16_vs_fp32']['target']:.0f}x", _met(r["bf16_vs_fp32"])))
        f = t.get("flops", {})
        if f:
            rows.append(("b. FLOPs per step (TF per-op FLOP registry over the traced train_step)", f"{f['total'] / 1e9:,.1f} GFLOP", "", ""))
        pk = d.get("matmul_peak", {})
        if pk:
            rows.append(("b. matmul peak measured in the same run (fp32 / bf16)",
                         f"{_g(pk.get('float32', {}).get('flops_per_second'))} / {_g(pk.get('bfloat16', {}).get('flops_per_second'))}", "", ""))
        for name, rec in t.get("precisions", {}).items():
            if "peak_fraction" in rec:
                key = "bf16_peak_fraction" if name == "bf16" else None
                rr = r.get(key) if key else None
                rows.append((f"b. {name} achieved / {name} matmul peak", f"{_g(rec['achieved_flops_per_second'])} = {_pct(rec['peak_fraction'])}",
                             f">= {100 * rr['target']:.0f}%" if rr else "", _met(rr) if rr else ""))
        if "input_overhead" in r:
            rp = next((rec["real_pipeline"] for rec in t["precisions"].values() if "real_pipeline" in rec), {})
            rows.append(("b. real tf.data pipeline from the cache vs in-memory batches",
                         f"{_pct(r['input_overhead']['value'])} ({rp.get('seconds_per_step', 0):.2f} s/step)",
                         f"< {100 * r['input_overhead']['target']:.0f}%", _met(r["input_overhead"])))
        elif t.get("real_pipeline_note"):
            rows.append(("b. input pipeline overhead", t["real_pipeline_note"], "< 5%", "n/a"))
        rows += _loop_rows(t)
    e = d.get("export") or {}
    if "error" in e:
        rows.append(("c. export", f"failed: {_err(e['error'])}", "", ""))
    elif e:
        rows.append((f"c. sample export: {e['pngs']} PNGs via cxr_utils.evaluation.synthetic.export", _n(e["images_per_second"], "img/s"), "", ""))
    g = d.get("digits") or {}
    if "error" in g:
        rows.append(("d. digits TSTR", f"failed: {_err(g['error'])}", "", ""))
    elif g:
        for pt in g.get("curve") or []:
            rows.append((f"d. digits TSTR after {pt.get('train_seconds', 0):.0f} s training (step {pt.get('step')})",
                         f"TSTR {pt['tstr']:.3f} = {pt.get('ratio', 0):.3f} of TRTR", "", ""))
        if g.get("tstr") is not None:
            short = g.get("short_run")
            rows.append((f"d. digits final TSTR / TRTR (exported PNGs; {g.get('source', '')})" + (" - a short budgeted run, not the target run" if short else ""),
                         f"{g['tstr']:.3f} / {g['trtr']:.3f} = {g['ratio']:.3f} in {g.get('seconds', 0):.0f} s",
                         f">= {TARGET_RATIO} within {TARGET_SECONDS:.0f} s",
                         "n/a" if short else _met({"met": target_met(g["ratio"], g.get("seconds", 1e9))})))
    rows += time_to_quality_rows(d.get("time_to_quality"))
    x = d.get("xray") or {}
    if "error" in x:
        rows.append(("f. x-ray quality tracking", f"failed: {_err(x['error'])}", "", ""))
    elif x:
        c = x.get("quality_cost") or {}
        if c:
            rows.append((f"f. one quality evaluation ({c['eval_n_per_class']} images per class, {c['n_train']} train / "
                         f"{c['n_val']} val images, {c['precision']}) vs {c['steps_between_evals']} train steps at batch "
                         f"{c['batch_size']}", f"{c['eval_seconds']:.2f} s vs {c['steps_between_evals'] * c['step_seconds']:.0f} s = "
                         f"{100 * c['share_of_training']:.1f}% of training", f"<= {100 * c['target_share']:.0f}%",
                         _met({"met": c["met"]})))
    mt = d.get("make_test") or {}
    if mt.get("measured"):
        st = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in mt["stages"].items())
        rr = mt["ratios"]["make_test_seconds"]
        rows.append(("e. `make test` wall time by stage", f"{st} (total {mt['total_seconds']:.0f} s)", f"< {rr['target']:.0f} s", _met(rr)))
    elif mt:
        rows.append(("e. `make test` wall time", "not measured yet", "< 600 s", "n/a"))
    q = d.get("quick_ratio")
    if q:
        rows.append(("`python -m benchmarks --quick` wall time", f"{q['value']:.0f} s", f"< {q['target']:.0f} s", _met(q)))
    return rows


def time_to_quality_rows(t: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """Issue 14's time to quality, before / after (benchmarks/time_to_quality.py): training seconds until the digits
    generator kept by the validation split reaches the TSTR/TRTR target, and until the default X-ray recipe first
    reaches the "learned" bar on the sample; totals over the seeds."""
    if not t:
        return []
    if "error" in t:
        return [("g. time to quality", f"failed: {_err(t['error'])}", "", "")]
    if "note" in t:
        return [("g. time to quality", t["note"], "", "n/a")]
    from cxr_utils.gan.tracker import LEARNED_DIVERSITY, LEARNED_TRAIN_COVERAGE

    seeds = ", ".join(str(s) for s in t.get("seeds", []))
    held = (t.get("xray") or {}).get("held") or {}
    measures = [(f"digits: the validation-kept generator reaches TSTR/TRTR >= {TARGET_RATIO}", t.get("digits")),
                (f"x-ray: the default recipe first reaches the learned bar on the sample (diversity >= "
                 f"{LEARNED_DIVERSITY}, >= {LEARNED_TRAIN_COVERAGE:.0%} of training images covered)", t.get("xray")),
                (f"x-ray: the learned bar holds at {held.get('evaluations')} evaluations in a row (one evaluation over a "
                 "bar scored on 10 images can be luck)", held)]
    rows = []
    for label, b in measures:
        if not b:
            continue
        r = b["ratio"]
        before = f"before {b['before_seconds']:.0f} s" + ("" if b.get("before_all_reached", True) else
                                                         " (not reached: the ratio is an upper bound)")
        after = f"after {b['after_seconds']:.0f} s"
        result = f"{before} / {after} = " + ("after never reached it" if r["value"] is None else _x(r["value"]))
        rows.append((f"g. time to quality, {label}; training seconds summed over seeds {seeds}, before / after issue 14 "
                     f"({t.get('source', '')})", result, f"<= {r['target']:.2f}x", _met(r)))
    return rows


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def _loop_rows(t: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The training loop around the step (issue 11): train() throughput against the bare step, XLA, step time before
    and after."""
    lp = t.get("loop") or {}
    rows: list[tuple[str, str, str, str]] = []
    if not lp:
        return rows
    c, bare, tr = lp.get("config", {}), lp["bare_step"], lp["train"]
    what = f"{c.get('image_size')} px, batch {c.get('batch_size')}, {bare.get('precision')}"
    rr = lp.get("ratios", {}).get("loop_vs_bare_step")
    rows.append((f"b. throughput of train() on the {lp.get('n_train')}-image sample ({lp.get('steps_per_epoch')} "
                 f"step per epoch, {what}, seed-recipe model, default cadence) / bare step (higher is better)",
                 f"{tr['images_per_second']:.1f} / {bare['images_per_second']:.1f} img/s = {_pct(rr and rr['value'])}",
                 f">= {100 * rr['target']:.0f}%" if rr else "", _met(rr)))
    if "bare_step_jit" in lp:
        rows.append((f"b. bare step with XLA (`--jit on`) / without ({what})",
                     f"{_s(lp['bare_step_jit']['seconds_per_step'])} / {_s(bare['seconds_per_step'])}", "", ""))
    ba = t.get("before_after") or {}
    if "before" in ba:
        b, a = ba["before"], ba["after"]
        ref = (f"commit {str(b.get('commit'))[:7]} / {str(a.get('commit'))[:7]}, measured alternately, best of "
               f"{ba.get('rounds')} rounds each")
        for key, label in (("bare_step_sample_config_seconds", f"bare step ({what})"),
                           ("bare_step_default_batch_seconds", f"bare step (64 px, batch 64, {b.get('precision')})"),
                           ("train_seconds_per_epoch", "train() seconds per epoch on the sample")):
            rows.append((f"b. {label}, before / after issue 11 ({ref})", f"{_s(b[key])} / {_s(a[key])}", "", ""))
        rows.append((f"b. throughput of train() / bare step, before / after issue 11 ({ref})",
                     f"{_pct(b['loop_vs_bare_step'])} / {_pct(a['loop_vs_bare_step'])}", "", ""))
    return rows


def generator_step_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """Issue 20's step before / after (benchmarks/generator_upgrade.py --parts step, its own JSON beside this one): the
    default recipe's bare D+G step with the earlier G and D (xray-v1) and with today's (xray), fp32 and bf16."""
    if not path.is_file():
        return []
    st = read_json(path).get("step")
    if not st:
        return []
    sp, fl, r = st["seconds_per_step"], st["flops_per_step"], st["recipes"]
    what = (f"{st['image_size']} px, batch {st['batch_size']}; `{r['before']}` / `{r['after']}`, best of {st['rounds']} "
            f"alternating rounds, load average {st['load_average_before'][0]:.1f}; {path.name}, "
            f"`python -m benchmarks.generator_upgrade --parts step`")
    rows = [(f"b. default recipe's D+G step {p}, before / after issue 20 ({what})",
             f"{_s(sp[f'before/{p}'])} / {_s(sp[f'after/{p}'])} = {sp[f'after/{p}'] / sp[f'before/{p}']:.2f}x", "", "")
            for p in ("fp32", "bf16")]
    rows.append((f"b. default recipe's FLOPs per step, before / after issue 20 ({r['before']} / {r['after']})",
                 f"{fl['before'] / 1e9:.1f} / {fl['after'] / 1e9:.1f} GFLOP", "", ""))
    return rows


def _profile_lines(d: dict[str, Any], top: int = 8) -> list[str]:
    t = d.get("train") or {}
    out = []
    for name, rec in t.get("precisions", {}).items():
        prof = rec.get("op_profile") or {}
        if not prof.get("available"):
            if prof:
                out.append(f"Op profile ({name}): unavailable ({prof.get('reason')}).")
            continue
        out.append(f"\nWhere the {name} train step spends its time (TF profiler trace, {prof.get('steps')} steps, host op self time):\n")
        out.append("| Op type | Share of op time | GFLOP per step | Achieved GFLOP/s |")
        out.append("|---|---|---|---|")
        for r in prof.get("top", [])[:top]:
            ach = r.get("achieved_flops_per_second")
            out.append(f"| {r['op']} | {_pct(r['share'])} | {r['flops_per_step'] / 1e9:.2f} | {'-' if ach is None else f'{ach / 1e9:,.0f}'} |")
    return out


def performance_markdown(json_path: str | os.PathLike) -> str:
    """The Performance section body (machine line, results table with targets, op profile) from a benchmarks JSON."""
    d = read_json(Path(json_path))
    lines = [f"Measured by `{d.get('command', 'python -m benchmarks')}` on {d.get('started_utc', '?')} "
             f"(JSON: `{Path(json_path).name}`; numbers are from one run on a shared machine: compare ratios, not absolute times).",
             "", machine_line(d.get("machine", {})), "",
             "| Measure | Result | Target | Status |", "|---|---|---|---|"]
    rows = _rows(d) + generator_step_rows(Path(json_path).parent / "generator_upgrade.json")
    lines += [f"| {a} | {b} | {c} | {s} |" for a, b, c, s in rows]
    lines += _profile_lines(d)
    return "\n".join(lines) + "\n"
