"""Bad data generated from the real sample X-rays: every file ends in the cache or in the listed skips, never a crash;
a bad folder is one clear error naming it, and an existing cache is left byte- and mtime-identical."""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_utils import data
from cxr_utils.cli import main as cli_main
from cxr_utils.errors import UserError

from .conftest import good_tree


def _gray(path: Path, side: int = 256) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((side, side), Image.BILINEAR))


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _listed(npz: Path) -> tuple[dict[str, dict], dict[str, str]]:
    m = data.load(npz).manifest
    return {e["path"]: e for e in m["images"]}, {s["path"]: s["reason"] for s in m["skipped"]}


def test_every_bad_file_is_cached_or_listed_as_skipped(real_jpegs, tmp_path, capsys):
    root = good_tree(tmp_path / "tree", real_jpegs)
    normal, pneu = root / "NORMAL", root / "PNEUMONIA"
    raw = real_jpegs[0].read_bytes()
    g = _gray(real_jpegs[1])
    rng = random.Random(1234)
    expect_skip: dict[str, str] = {}  # rel path -> substring of the reason
    expect_keep: list[str] = []
    maybe: list[str] = []  # corrupted bytes: libjpeg may still decode them; either way they must be listed

    (normal / "zero.jpeg").write_bytes(b"")
    expect_skip["NORMAL/zero.jpeg"] = "empty"
    for frac in (0.1, 0.5, 0.9, 0.999):
        name = f"truncated-{frac}.jpeg"
        (normal / name).write_bytes(raw[: int(len(raw) * frac)])
        expect_skip[f"NORMAL/{name}"] = "truncated"
    for i in range(6):
        b = bytearray(raw)
        for _ in range(rng.choice([1, 10, 200])):
            b[rng.randrange(2, len(b) - 2)] = rng.randrange(256)
        (normal / f"corrupt-{i}.jpeg").write_bytes(bytes(b))
        maybe.append(f"NORMAL/corrupt-{i}.jpeg")
    (normal / "header-only.jpeg").write_bytes(raw[:200] + b"\xff\xd9")
    maybe.append("NORMAL/header-only.jpeg")
    # wrong extensions: content decides
    (normal / "jpeg-named.png").write_bytes(raw)
    (pneu / "png-named.jpeg").write_bytes(_encode(Image.fromarray(g), "PNG"))
    (pneu / "notes.jpeg").write_text("not an image, just text", encoding="utf-8")
    expect_keep += ["NORMAL/jpeg-named.png", "PNEUMONIA/png-named.jpeg"]
    expect_skip["PNEUMONIA/notes.jpeg"] = "not an image"
    # sizes
    (pneu / "one-pixel.png").write_bytes(_encode(Image.fromarray(g[:1, :1]), "PNG"))
    expect_skip["PNEUMONIA/one-pixel.png"] = "small"
    big = Image.fromarray(g).resize((6000, 6000), Image.BILINEAR)
    (pneu / "huge 6000.jpeg").write_bytes(_encode(big, "JPEG", quality=80))
    expect_keep.append("PNEUMONIA/huge 6000.jpeg")
    # names with spaces and non-ASCII characters
    uni = "person1 virus Ärztin 東京 ü.jpeg"
    shutil.copyfile(real_jpegs[9], pneu / uni)
    expect_keep.append(f"PNEUMONIA/{uni}")
    # symlinks: a self loop, a dangling link, a directory loop; a FIFO (reading it would block forever)
    os.symlink("loop.jpeg", normal / "loop.jpeg")
    os.symlink("does-not-exist.jpeg", normal / "dangling.jpeg")
    os.symlink("..", normal / "dirloop")
    os.mkfifo(normal / "pipe.jpeg")
    expect_skip.update({"NORMAL/loop.jpeg": "not a regular file", "NORMAL/dangling.jpeg": "not a regular file",
                        "NORMAL/pipe.jpeg": "not a regular file",
                        "NORMAL/dirloop": "link"})  # a linked folder is not followed, and the summary says so

    out = tmp_path / "cache" / "bad-32.npz"
    assert cli_main(["prepare", "--source", "folder", "--path", str(root), "--size", "32", "--out", str(out),
                     "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    kept, skipped = _listed(out)
    on_disk = set()
    for dirpath, _dirs, files in os.walk(root):  # os.walk does not follow the directory loop
        on_disk |= {(Path(dirpath) / f).relative_to(root).as_posix() for f in files}
    listed_paths = set(kept) | set(skipped)
    assert on_disk - {"NORMAL/dirloop"} <= listed_paths, sorted(on_disk - listed_paths)
    assert not set(kept) & set(skipped)
    for rel, why in expect_skip.items():
        assert rel in skipped and why in skipped[rel], (rel, skipped.get(rel), kept.get(rel, {}).get("path"))
        assert f"  {rel}: " in summary  # named in the printed summary too
    for rel in expect_keep:
        assert rel in kept, (rel, skipped.get(rel))
    for rel in maybe:
        assert rel in kept or rel in skipped
    # the cache holds exactly what the manifest lists
    ds = data.load(out)
    assert len(ds) == len(kept) and ds.images.shape[1:] == (32, 32)
    assert not [k for k in kept if "dirloop" in k]  # the loop was not followed into the other class
    assert sum(k.startswith("NORMAL/") and "-IM-" in k for k in kept) == 3
    assert sum(k.startswith("PNEUMONIA/person") for k in kept) == 4  # 3 originals + the renamed copy


def test_image_modes_of_a_real_xray_decode_to_the_same_picture(real_jpegs, tmp_path):
    g = _gray(real_jpegs[3])
    im = Image.fromarray(g)
    variants = {
        "L.png": _encode(im, "PNG"),
        "RGB.png": _encode(im.convert("RGB"), "PNG"),
        "RGBA.png": _encode(im.convert("RGBA"), "PNG"),
        "LA.png": _encode(im.convert("LA"), "PNG"),
        "P.png": _encode(im.convert("RGB").quantize(256), "PNG"),
        "I16.png": _encode(Image.fromarray(g.astype(np.uint16) * 257), "PNG"),
        "CMYK.jpeg": _encode(im.convert("CMYK"), "JPEG", quality=95),
        "RGB.jpeg": _encode(im.convert("RGB"), "JPEG", quality=95),
        "L.tiff": _encode(im, "TIFF"),
        "L.bmp": _encode(im, "BMP"),
        "RGB.webp": _encode(im.convert("RGB"), "WEBP", lossless=True),
    }
    ref = data.decode_bytes(variants["L.png"], 64)[0].astype(int)
    tol = {"CMYK.jpeg": 3.0, "RGB.jpeg": 3.0, "P.png": 1.0}
    for name, blob in variants.items():
        px, _method = data.decode_bytes(blob, 64)
        assert px.shape == (64, 64) and px.dtype == np.uint8, name
        err = np.abs(px.astype(int) - ref).mean()
        assert err <= tol.get(name, 0.5), (name, err)


@pytest.mark.parametrize("case", ["missing_class", "empty_tree", "no_readable_class", "only_links", "not_a_folder"])
def test_failed_prepare_leaves_existing_cache_untouched(real_jpegs, tmp_path, capsys, case):
    out = tmp_path / "cache" / "folder-32.npz"
    good = good_tree(tmp_path / "good", real_jpegs, k=2)
    data.prepare("folder", path=good, size=32, out=out, workers=1, progress=False)
    mp = data.manifest_path(out)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out, mp)}

    bad = tmp_path / "bad"
    if case == "missing_class":
        good_tree(bad, real_jpegs, k=2)
        shutil.rmtree(bad / "PNEUMONIA")
        named = bad
    elif case == "empty_tree":
        bad.mkdir()
        named = bad
    elif case == "no_readable_class":
        good_tree(bad, real_jpegs, k=2)
        for p in (bad / "NORMAL").iterdir():
            p.write_bytes(p.read_bytes()[:300])  # all truncated
        named = bad
    elif case == "only_links":
        good_tree(bad, real_jpegs, k=2)
        for p in (bad / "PNEUMONIA").iterdir():
            p.unlink()
        os.symlink("loop.jpeg", bad / "PNEUMONIA" / "loop.jpeg")
        named = bad
    else:
        bad.write_bytes(real_jpegs[0].read_bytes())  # a file where a folder is expected
        named = bad
    with pytest.raises(UserError) as ei:
        data.prepare("folder", path=bad, size=32, out=out, workers=1, progress=False, force=True)
    assert str(named) in str(ei.value), str(ei.value)
    assert cli_main(["prepare", "--source", "folder", "--path", str(bad), "--size", "32", "--out", str(out),
                     "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(named) in err, err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out, mp)} == before
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, mp.name])  # no temp files
