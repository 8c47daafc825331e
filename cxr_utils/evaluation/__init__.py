"""Evaluation wing: does a classifier gain from synthetic X-rays? The VGG16 protocols and everything around them.

From the ground up, each importing only those below (and ground, data/, metrics/, gan/): study_store (the study's
per-seed entries on disk), classifier (the VGG16 classifier and EvalConfig), synthetic (export and load a synthetic
folder), charts (evaluation figures); inputs (real splits and synthetic folders); protocols (trtr / tstr / augment /
pretrain, run_protocol, evaluate), tables (the report's tables), folder_metrics (generative metrics of a folder),
checks (notebook 03's checks); study (notebook 04's whole evaluation). Add a protocol in protocols.py.
Nothing is imported here: `import cxr_utils.evaluation` loads no TensorFlow.
"""
