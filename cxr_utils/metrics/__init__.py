"""Metrics wing: numbers about images and classifiers, one concern per file, pure numpy/scipy where possible.

From the ground up, each importing only those below (and ground): neighbors (pairwise distances), imagenet (the
ImageNet weights: fetch, verify, name); memorization (nearest training images), artefacts (high-frequency share),
fidelity (label fidelity), classification (counts, metrics, threshold, bootstrap CI), paired (paired statistics
across seeds), real_baseline (what held-out real images reach), sample_scores (diversity, train coverage);
distributions (FID, KID, PRDC, feature_metrics); features (the feature extractors: VGG16, domain CNN, random CNN).
Add a metric as a new file here. Nothing is imported here, so `import cxr_utils.metrics` stays cheap.
"""
