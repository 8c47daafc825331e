"""The x-ray recipe benchmark: every recipe through the real trainer on the real sample, the same step budget, the
kept generator's scores in the JSON, a grid, and the README table generated from that JSON."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # 17-49 s; a benchmark's end-to-end smoke run: make test-slow (CI's second stage) keeps it
def test_recipes_benchmark_smoke(sample_data_dir, tmp_path, monkeypatch) -> None:
    from PIL import Image

    from benchmarks import xray_recipes as X
    from cxr_utils.gan import tracker

    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))
    from cxr_utils import drawing

    drawn = {}
    real_grid = drawing.image_grid

    def spy_grid(rows, row_titles=None, **kw):  # what the figure shows, row by row
        drawn.update(rows=[len(r) for r in rows], titles=list(row_titles))
        return real_grid(rows, row_titles, **kw)

    monkeypatch.setattr(drawing, "image_grid", spy_grid)
    grid = tmp_path / "grid.png"
    res = X.run(["xray", "seed"], steps=3, work=tmp_path / "work", grid=grid, quick=True,
                partial=tmp_path / "partial.json")
    assert [r["recipe"] for r in res["recipes"]] == ["xray", "seed"]
    assert res["bar"] == {"diversity": tracker.LEARNED_DIVERSITY, "train_coverage": tracker.LEARNED_TRAIN_COVERAGE, "of": 10}
    for r in res["recipes"]:
        assert r["steps"] == 3 and r["batch_size"] == 10  # the same budget for every recipe, the whole train split
        epochs = [p["epoch"] for p in r["curve"]]
        assert epochs == sorted(set(epochs)) and epochs[-1] == 3 and len(epochs) == 3  # eval_every 1: each epoch once
        # coverage compares with min(eval_n_per_class, class size) training images per class: all 10
        assert r["best"]["epoch"] in epochs and r["best"]["scores"]["train_images"] == 10
        b = r["best"]["scores"]
        # the sample's 2 + 2 val images are too few for bars calibrated on real images: the fixed bars judge, and
        # every curve point says so (meets_bar reads the same row keys as learned_check)
        assert X.meets_bar(b) == (b["diversity"] >= 0.4 and b["train_coverage"] >= 0.7)
        assert all(p["bars"].startswith("fixed: only 2 NORMAL and 2 PNEUMONIA") for p in r["curve"])
        assert b["bars"] == r["curve"][0]["bars"] and all(p["diversity_vs_real"] > 0 for p in r["curve"])
        # every evaluation has its training seconds, increasing; time_to_bar is the first one over the bar or None
        secs = [p["train_seconds"] for p in r["curve"]]
        assert all(s is not None for s in secs) and secs == sorted(secs) and secs[0] > 0
        first = next((p for p in r["curve"] if X.meets_bar(p)), None)
        assert r["time_to_bar"] == (first and {"epoch": first["epoch"], "step": first["step"], "train_seconds": first["train_seconds"]})
    assert res["recipes"][0]["fields"]["g_base_filters"] == 32 and res["recipes"][1]["fields"]["norm"] == "layer"
    assert json.loads((tmp_path / "partial.json").read_text())["partial"] is True
    with Image.open(grid) as im:
        im.verify()
    # the real training images of each class (5), then 8 SYNTHETIC images per class from each recipe's kept generator
    assert drawn["rows"] == [5, 5, 8, 8, 8, 8]
    kept = [r["best"]["epoch"] for r in res["recipes"]]
    assert drawn["titles"] == ["real NORMAL\n(train)", "real PNEUMONIA\n(train)",
                               f"xray\nSYNTHETIC NORMAL\n(epoch {kept[0]})", f"xray\nSYNTHETIC PNEUMONIA\n(epoch {kept[0]})",
                               f"seed\nSYNTHETIC NORMAL\n(epoch {kept[1]})", f"seed\nSYNTHETIC PNEUMONIA\n(epoch {kept[1]})"]


def test_time_to_bar_sums_the_epoch_times_up_to_the_first_evaluation_over_the_bar(tmp_path) -> None:
    from benchmarks import xray_recipes as X

    run = tmp_path / "run"
    run.mkdir()
    rows = ["epoch,d_loss,seconds", "1,0.5,2.5", "2,0.5,1.0", "3,0.5,1.25", "4,0.5,1.0"]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    pt = lambda e, d, c: {"epoch": e, "step": e, "diversity": d, "train_coverage": c}  # noqa: E731
    res = X.add_time_to_bar({"curve": [pt(2, 0.5, 0.6), pt(3, 0.39, 0.9), pt(4, 0.4, 0.7)]}, run)
    assert [p["train_seconds"] for p in res["curve"]] == [3.5, 4.8, 5.8]  # 2.5+1.0, +1.25 (rounded to 0.1), +1.0
    assert res["time_to_bar"] == {"epoch": 4, "step": 4, "train_seconds": 5.8}  # 0.39 < 0.4 at epoch 3; bars inclusive
    assert X.add_time_to_bar({"curve": [pt(2, 0.1, 0.1)]}, run)["time_to_bar"] is None


def test_from_partial_needs_the_work_dir(capsys) -> None:
    from benchmarks import xray_recipes as X

    assert X.main(["--from-partial", "--out", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from-partial") and err.count("\n") == 1


def test_readme_section_comes_from_the_json(tmp_path, monkeypatch) -> None:
    import scripts.update_readme as U

    d = {"steps": 3000, "seed": 0, "data": "sample", "can_show": "10 images can show X.", "grid": None,
         "bar": {"diversity": 0.4, "train_coverage": 0.7, "of": 10}, "command": "python benchmarks/xray_recipes.py",
         "recipes": [{"recipe": "xray", "seconds": 12.0, "last": {"alarm": ""}, "best": {"epoch": 2500, "scores": {
             "diversity": 0.52, "train_coverage": 0.8, "train_covered": 8, "train_images": 10, "fidelity": 0.9,
             "kid": 0.01, "hf_share": 0.0135, "hf_share_vs_real": 1.46, "stripe_vs_real": 1.234}}},
             {"recipe": "seed", "seconds": 30.0, "last": {"alarm": "quality alarm"}, "best": {"epoch": 500, "scores": {
                 "diversity": 0.1, "train_coverage": 0.2, "train_covered": 2, "train_images": 10, "fidelity": 1.0,
                 "kid": 0.3}}}]}
    (tmp_path / "xray_recipes.json").write_text(json.dumps(d))
    monkeypatch.setattr(U, "RESULTS", tmp_path)
    monkeypatch.setattr(U, "_rel", lambda p: p.name)
    text = U.section_xray()
    # the artefact scores beside the real images' (n/a: a row measured before the score existed)
    assert "| `xray` | 2500 | 0.52 | 8 / 10 | 0.90 | 1.46x (0.0135); stripes 1.23x | 0.0100 | no | met | 12 s |" in text
    assert "| `seed` | 500 | 0.10 | 2 / 10 | 1.00 | n/a; stripes n/a | 0.3000 | yes | missed | 30 s |" in text
    assert "10 images can show X." in text


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    from cxr_utils.config import project_root

    monkeypatch.syspath_prepend(str(project_root()))


def test_carry_over_reuses_only_unchanged_recipes_and_keeps_the_earlier_grid(tmp_path, monkeypatch) -> None:
    from benchmarks import xray_recipes as X
    from cxr_utils.config import recipe
    from cxr_utils.errors import UserError

    monkeypatch.setattr(X, "ROOT", tmp_path)
    (tmp_path / "grid.png").write_bytes(b"old picture")
    # an entry measured when `seed` named fewer fields (the optimiser's joined later, at the same default values)
    fewer = {k: v for k, v in recipe("seed").items() if k not in ("g_lr", "d_lr", "beta_1", "beta_2")}
    seed_entry = {"recipe": "seed", "fields": fewer, "steps": 3000, "seconds": 1484.0}
    stale = {"recipe": "xray", "fields": {**recipe("xray"), "d_lr": 2e-4}, "steps": 3000, "seconds": 479.0}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seed": 0, "grid": "grid.png", "command": "python benchmarks/xray_recipes.py --x",
                               "recipes": [seed_entry, stale]}))
    got = X.carry_over(["seed"], old, 3000, 0, tmp_path / "grid.png")
    assert len(got) == 1 and got[0]["seconds"] == 1484.0 and got[0]["grid"] == "grid-earlier.png"
    assert "not re-run" in got[0]["carried_over"] and "python benchmarks/xray_recipes.py --x" in got[0]["carried_over"]
    assert (tmp_path / "grid-earlier.png").read_bytes() == b"old picture"
    assert got[0]["fields"] == dict(sorted(recipe("seed").items()))  # the fields it resolves to today
    (tmp_path / "grid.png").write_bytes(b"new picture")  # a second carry-over keeps the earlier picture...
    again = tmp_path / "again.json"
    again.write_text(json.dumps({"seed": 0, "grid": "grid.png", "command": "python benchmarks/xray_recipes.py --carry",
                                 "recipes": got}))
    twice = X.carry_over(["seed"], again, 3000, 0, tmp_path / "grid.png")
    assert (tmp_path / "grid-earlier.png").read_bytes() == b"old picture"
    # ... and the entry still names the run that measured it, not the run that carried it
    assert twice[0]["carried_over"] == got[0]["carried_over"] and twice[0]["grid"] == "grid-earlier.png"
    # an entry measured fresh in a JSON whose grid replaced an earlier one: its picture gets the next free name
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps({"seed": 0, "grid": "grid.png", "command": "python benchmarks/xray_recipes.py --fresh",
                                 "recipes": [seed_entry]}))
    third = X.carry_over(["seed"], fresh, 3000, 0, tmp_path / "grid.png")
    assert third[0]["grid"] == "grid-earlier-2.png" and (tmp_path / "grid-earlier-2.png").read_bytes() == b"new picture"
    assert (tmp_path / "grid-earlier.png").read_bytes() == b"old picture"
    assert X.carry_over(["seed"], fresh, 3000, 0, tmp_path / "grid.png")[0]["grid"] == "grid-earlier-2.png"  # reused
    # the JSON's figure was since replaced by another run's (its sha256 no longer matches): no picture is claimed
    fresh.write_text(json.dumps({"seed": 0, "grid": "grid.png", "grid_sha256": "0" * 64, "recipes": [seed_entry]}))
    assert X.carry_over(["seed"], fresh, 3000, 0, tmp_path / "grid.png")[0]["grid"] is None
    # an entry carried before and drawn in that JSON's grid from a run folder not given now keeps that grid, copied
    drawn = {**seed_entry, "carried_over": "not re-run: measured by --drawn", "grid": None, "in_grid": True}
    (tmp_path / "grid.png").write_bytes(b"drawn picture")
    fresh.write_text(json.dumps({"seed": 0, "grid": "grid.png", "recipes": [drawn]}))
    kept = X.carry_over(["seed"], fresh, 3000, 0, tmp_path / "grid.png")[0]
    assert kept["grid"] == "grid-earlier-3.png" and (tmp_path / "grid-earlier-3.png").read_bytes() == b"drawn picture"
    assert kept["in_grid"] is False and kept["carried_over"].startswith("not re-run: measured by --drawn")
    with pytest.raises(UserError, match="xray: its fields, steps or seed changed"):
        X.carry_over(["xray"], old, 3000, 0, None)  # its optimiser changed: must be re-run
    with pytest.raises(UserError, match="seed: its fields, steps or seed changed"):
        X.carry_over(["seed"], old, 2000, 0, None)  # another step budget is another measurement
    with pytest.raises(UserError, match="has no xray-ln entry"):
        X.carry_over(["xray-ln"], old, 3000, 0, None)


def test_carry_over_refuses_an_entry_that_todays_kept_generator_rule_ranks_differently(tmp_path) -> None:
    """Issue 20's fidelity bar moved the kept epoch of some runs: their entries must be measured again, not carried."""
    from benchmarks import xray_recipes as X
    from cxr_utils.config import recipe
    from cxr_utils.errors import UserError

    curve = [{"epoch": 2000, "fidelity": 0.78, "kid_balanced": -0.12, "hf_share_vs_real": 1.35, "alarm": None},
             {"epoch": 2500, "fidelity": 0.89, "kid_balanced": -0.06, "hf_share_vs_real": 1.19, "alarm": None}]
    entry = {"recipe": "xray", "fields": recipe("xray"), "steps": 3000, "curve": curve, "best": {"epoch": 2000}}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seed": 0, "command": "python benchmarks/xray_recipes.py --x", "recipes": [entry]}))
    with pytest.raises(UserError, match="xray: today's kept-generator rule .* keeps epoch 2500 of its quality curve, "
                                        "the entry kept epoch 2000"):
        X.carry_over(["xray"], old, 3000, 0, None)
    old.write_text(json.dumps({"seed": 0, "command": "python benchmarks/xray_recipes.py --x",
                               "recipes": [{**entry, "best": {"epoch": 2500}}]}))
    assert X.carry_over(["xray"], old, 3000, 0, None)[0]["best"] == {"epoch": 2500}


def test_carry_over_by_configuration_from_several_jsons_and_run_folders(tmp_path, monkeypatch) -> None:
    from benchmarks import xray_recipes as X
    from cxr_utils.config import recipe
    from cxr_utils.errors import UserError

    monkeypatch.setattr(X, "ROOT", tmp_path)
    # measured when `xray` still had spectral_all: that entry is today's `xray:spectral_all=true`, and the variant
    # then called `xray:spectral_all=false` is today's `xray`
    then = {**recipe("xray"), "spectral_all": True}
    first = tmp_path / "first.partial.json"
    first.write_text(json.dumps({"seed": 0, "recipes": [
        {"recipe": "xray", "fields": then, "steps": 3000, "seconds": 522.0},
        {"recipe": "xray:spectral_all=false", "fields": {**then, "spectral_all": False}, "steps": 3000, "seconds": 358.0,
         "best": {"epoch": 1500, "scores": {"diversity": 0.47}}}]}))
    main = tmp_path / "main.json"
    main.write_text(json.dumps({"seed": 0, "command": "python benchmarks/xray_recipes.py --main", "recipes": [
        {"recipe": "seed", "fields": recipe("seed"), "steps": 3000, "seconds": 1484.0}]}))
    work, later = tmp_path / "work", tmp_path / "later"
    for folder, epoch in ((work / "xray", 1500), (later / "xray", 1000), (later / "xray--spectral_all-false", 500)):
        folder.mkdir(parents=True)  # the folder is found by what it measured (best.json), not by its name
        (folder / "generator-best.keras").write_bytes(b"k")
        (folder / "best.json").write_text(json.dumps({"epoch": epoch, "scores": {"diversity": 0.47}}))
    got = X.carry_over(["xray@xray:spectral_all=false", "xray:spectral_all=true@xray", "seed"], [first, main], 3000, 0,
                       None, work=[later, work], note="measured 10:07-10:41 UTC")
    assert [(r["recipe"], r["seconds"]) for r in got] == [("xray", 358.0), ("xray:spectral_all=true", 522.0),
                                                            ("seed", 1484.0)]
    assert "as `xray:spectral_all=false`" in got[0]["carried_over"] and str(first) in got[0]["carried_over"]
    assert "measured 10:07-10:41 UTC" in got[0]["carried_over"]
    assert "--main" in got[2]["carried_over"]  # the second JSON, named by its command
    assert got[0]["run_dir"] == str(work / "xray") and "run_dir" not in got[1]  # no folder measured it: not drawn
    with pytest.raises(UserError, match="xray: its fields, steps or seed changed"):
        X.carry_over(["xray"], [first], 3000, 0, None)  # the name alone is not enough: the configuration decides
    with pytest.raises(UserError, match="has no xray-ln entry"):
        X.carry_over(["xray-ln"], [first, main], 3000, 0, None)


def test_run_with_only_carried_entries_trains_nothing_and_keeps_their_labels(tmp_path, monkeypatch, sample_data_dir) -> None:
    from benchmarks import xray_recipes as X

    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))
    monkeypatch.setattr(X, "run_recipe", lambda *a, **k: pytest.fail("nothing is to be trained"))
    carried = [{"recipe": "seed", "carried_over": "not re-run", "grid": None, "steps": 3000}]
    res = X.run([], steps=3000, work=tmp_path / "w", grid=tmp_path / "g.png", carried=carried)
    assert res["recipes"] == carried and not (tmp_path / "g.png").exists()  # nothing drawn: no grid written
