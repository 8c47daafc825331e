"""Data layer: a source -> one preprocessing function -> a cached .npz + manifest (see docs/architecture.md).

From the ground up, each importing only those below: splits, messages; decode, folders, archive, cache;
sources (downloads), audit (reads a loaded cache); build (`prepare`, the one module that ties them together).
The names below are the package's face: `from cxr_utils import data; data.prepare(...)`, `data.load(...)`, ...
"""

# ruff: noqa: F401, I001 - a face: every import is a re-export, grouped per module (one line would be too long)
from .archive import KAGGLE_DATASET
from .audit import counts, counts_table, leakage_report, patient_rule_line
from .build import prepare, prepare_verbose
from .cache import FORMAT_VERSION, cache_format, load, manifest_path
from .decode import decode_bytes, decode_files, from_model_view, gray_images, preprocess_image, square_resize, to_gray
from .decode import _default_workers, _pool_context, to_model_view  # the private two: benchmarks/prep.py, a test
from .sources import DOWNLOAD_TIMEOUT_S, MEDMNIST_FILE, MEDMNIST_MD5, PROBE_TIMEOUT_S, SAMPLE_MEMBER_DIR
from .sources import SAMPLE_WHEEL_SHA256, fetch_sample, kaggle_credentials
from .sources import resolve_auto, write_kaggle_json
from .splits import DEFAULT_TEST_PATIENTS, SPLITS, TEST_PATIENT_RULES, grouped_split, label_from_name, patient_id
from .splits import describe_test_overlap, series_id
