"""Search every confusion matrix of the Kaggle test split for the seed repository's headline figures.

    python scripts/check_seed_claim.py --out assets/results/seed_claim.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    args = ap.parse_args(argv)
    from cxr_utils.evaluation.tables import KAGGLE_TEST, SEED_CLAIM, search_confusion_matrices
    from cxr_utils.files import atomic_write_json

    res = search_confusion_matrices(**SEED_CLAIM, **KAGGLE_TEST)
    res["source_of_claim"] = "the seed repository's README (VGG16 fine-tuned on GAN images only, Kaggle test split)"
    res["command"] = "python scripts/check_seed_claim.py --out assets/results/seed_claim.json"
    if args.out:
        atomic_write_json(args.out, res)
    print(res["statement"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
