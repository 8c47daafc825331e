"""The artefact bar calibrated on real images: what real X-rays and digits score against the training images.

The artefact score (`hf_share_vs_real`, cxr_utils.metrics.real_baseline.artefact_reference) divides the high-frequency share
of a set of images by the class-balanced share of the training images. Real images of the same kind should score about
1.0x; how far from 1.0x they land at the sizes we have is what any bar on synthetic images must stay clear of
(cxr_utils.gan.tracker.ARTEFACT_MAX):

- the real `sample` source: its held-out val X-rays and its test X-rays against its training X-rays (per class too);
- scikit-learn's digits (the raw 8 x 8 images): random disjoint halves, `--draws` times, one half's share over the other's (5th, 50th, 95th percentile).

    python -m benchmarks.artefact_calibration --out assets/results/artefact_calibration.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sample_part() -> dict[str, Any]:
    """The sample's val and test X-rays against its training X-rays."""
    from cxr_utils import data
    from cxr_utils.config import CLASS_NAMES
    from cxr_utils.metrics.artefacts import balanced_share

    ds = data.load(data.prepare(source="sample", size=64, progress=False))
    train, per_train = balanced_share(*ds.subset("train"), CLASS_NAMES)
    out: dict[str, Any] = {"train": {"images": int(len(ds.subset("train")[1])), "hf_share": train, "per_class": per_train}}
    for split in ("val", "test"):
        x, y = ds.subset(split)
        v, per = balanced_share(x, y, CLASS_NAMES)
        out[split] = {"images": int(len(y)), "hf_share": v, "per_class": per, "vs_train": v / train,
                      "per_class_vs_train": {n: per[n] / per_train[n] for n in per}}
    return out


def digits_part(draws: int, half: int, seed: int) -> dict[str, Any]:
    """Disjoint random halves of the real digits: one half's share over the other's."""
    import numpy as np
    from sklearn.datasets import load_digits

    from cxr_utils.metrics.artefacts import high_frequency_share

    x = load_digits().images
    h = high_frequency_share(x)
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(draws):
        p = rng.permutation(len(x))
        ratios.append(float(h[p[:half]].mean() / h[p[half:2 * half]].mean()))
    q = np.percentile(ratios, [5, 50, 95])
    return {"images": int(len(x)), "half": half, "draws": draws, "seed": seed,
            "ratio_percentiles": {"p5": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}}


def main(argv: list[str] | None = None) -> int:
    """Command line: measure both parts, write the JSON atomically, print one line."""
    from cxr_utils.files import atomic_write_json
    from cxr_utils.gan.tracker import ARTEFACT_MAX

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--half", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = {"what": "high-frequency share of real images over the training images' (the artefact score's reference)",
           "artefact_max": ARTEFACT_MAX, "sample": sample_part(),
           "digits": digits_part(args.draws, args.half, args.seed),
           "command": "python -m benchmarks.artefact_calibration " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(Path(args.out), res)
    s, d = res["sample"], res["digits"]["ratio_percentiles"]
    print(f"sample val {s['val']['vs_train']:.2f}x, test {s['test']['vs_train']:.2f}x of the training X-rays; digits halves "
          f"{d['p5']:.2f}-{d['p95']:.2f}x (5-95 %); bar {ARTEFACT_MAX}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
