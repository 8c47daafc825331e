"""The artefact bar calibrated on real images: what real X-rays and digits score against the training images.

The artefact score (`hf_share_vs_real`, cxr_utils.metrics.real_baseline.artefact_reference) divides the high-frequency share
of a set of images by the class-balanced share of the training images. Real images of the same kind should score about
1.0x; how far from 1.0x they land at the sizes we have is what any bar on synthetic images must stay clear of
(cxr_utils.gan.tracker.ARTEFACT_MAX):

- the real `sample` source: its held-out val X-rays and its test X-rays against its training X-rays (per class too);
- scikit-learn's digits (the raw 8 x 8 images): random disjoint halves, `--draws` times, one half's share over the other's (5th, 50th, 95th percentile).

The stripe score (`stripe_vs_real`, metrics.artefacts.stripe_ratio: the strongest row or column frequency in the upper
half of the band over the training images' share there; cxr_utils.gan.tracker.STRIPE_MAX) gets the same two parts; on
digits also at the quality probe's count (`--probe-count` images per class, the default eval_n_per_class, or all a
class has left, against `--half`): a maximum over frequencies grows with the noise of a small set, so a line must clear
what that many real images reach.

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
    from cxr_utils.metrics.artefacts import balanced_axis_spectrum, balanced_share, stripe_ratio

    ds = data.load(data.prepare(source="sample", size=64, progress=False))
    train, per_train = balanced_share(*ds.subset("train"), CLASS_NAMES)
    out: dict[str, Any] = {"train": {"images": int(len(ds.subset("train")[1])), "hf_share": train, "per_class": per_train}}
    spec_train = balanced_axis_spectrum(*ds.subset("train"), len(CLASS_NAMES))
    for split in ("val", "test"):
        x, y = ds.subset(split)
        v, per = balanced_share(x, y, CLASS_NAMES)
        out[split] = {"images": int(len(y)), "hf_share": v, "per_class": per, "vs_train": v / train,
                      "per_class_vs_train": {n: per[n] / per_train[n] for n in per},
                      "stripe_vs_train": stripe_ratio(balanced_axis_spectrum(x, y, len(CLASS_NAMES)), spec_train)}
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    q = np.percentile(values, [5, 50, 95])
    return {"p5": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}


def digits_part(draws: int, half: int, seed: int, probe_count: int) -> dict[str, Any]:
    """Disjoint random draws of the real digits: one half's high-frequency share over the other's; one half's stripe
    score against the other (class-balanced over the 10 digits), and that of up to `probe_count` images per class (of
    the images outside the reference half) against the reference half."""
    import numpy as np
    from sklearn.datasets import load_digits

    from cxr_utils.metrics.artefacts import axis_spectrum, class_means, high_frequency_share, stripe_ratio

    digits = load_digits()
    x, y = digits.images, digits.target
    h, spec = high_frequency_share(x), axis_spectrum(x)

    def balanced(idx: Any) -> Any:  # the class-balanced mean of precomputed spectra (balanced_axis_spectrum's)
        return np.mean(list(class_means(spec[idx], y[idx], len(digits.target_names)).values()), axis=0)

    rng = np.random.default_rng(seed)
    ratios, stripes, stripes_probe = [], [], []
    for _ in range(draws):
        p = rng.permutation(len(x))
        a, b = p[:half], p[half:2 * half]
        ratios.append(float(h[a].mean() / h[b].mean()))
        stripes.append(stripe_ratio(balanced(a), balanced(b)))
        rest = np.setdiff1d(p, b)
        per_class = np.concatenate([rng.permutation(rest[y[rest] == c])[:probe_count] for c in np.unique(y)])
        stripes_probe.append(stripe_ratio(balanced(per_class), balanced(b)))
    return {"images": int(len(x)), "half": half, "draws": draws, "seed": seed, "probe_count": probe_count,
            "ratio_percentiles": _percentiles(ratios), "stripe_percentiles": _percentiles(stripes),
            "stripe_probe_count_percentiles": _percentiles(stripes_probe)}


def main(argv: list[str] | None = None) -> int:
    """Command line: measure both parts, write the JSON atomically, print one line."""
    from cxr_utils.config import GANConfig
    from cxr_utils.files import atomic_write_json
    from cxr_utils.gan.tracker import ARTEFACT_MAX, STRIPE_MAX

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--half", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-count", type=int, default=GANConfig().eval_n_per_class)
    args = ap.parse_args(argv)
    res = {"what": "high-frequency share and stripe score of real images against the training images' (the artefact "
                   "scores' reference)",
           "artefact_max": ARTEFACT_MAX, "stripe_max": STRIPE_MAX, "sample": sample_part(),
           "digits": digits_part(args.draws, args.half, args.seed, args.probe_count),
           "command": "python -m benchmarks.artefact_calibration " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(Path(args.out), res)
    s, d, st = res["sample"], res["digits"]["ratio_percentiles"], res["digits"]["stripe_percentiles"]
    sp = res["digits"]["stripe_probe_count_percentiles"]
    print(f"high-frequency share: sample val {s['val']['vs_train']:.2f}x, test {s['test']['vs_train']:.2f}x of the "
          f"training X-rays; digits halves {d['p5']:.2f}-{d['p95']:.2f}x (5-95 %); bar {ARTEFACT_MAX}x\n"
          f"stripe score: sample val {s['val']['stripe_vs_train']:.2f}x, test {s['test']['stripe_vs_train']:.2f}x; digits "
          f"halves {st['p5']:.2f}-{st['p95']:.2f}x, {args.probe_count} per class vs {args.half} "
          f"{sp['p5']:.2f}-{sp['p95']:.2f}x; "
          f"bar {STRIPE_MAX}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
