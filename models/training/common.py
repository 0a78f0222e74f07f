"""Shared helpers for ctgate's model training, export and evaluation (pipeline constants, phantom data, metrics)."""
import json
import math
import os

import numpy as np

from real_data import WINDOW  # noqa: F401  (HU, lesion segmentation and classification: one definition)

# The paper's pipeline (DESIGN.md) as this project's models use it.
SPACING = [1, 1, 2.5]            # mm, x y z
LUNG_WINDOW = [-150, 350]        # HU, classical lung segmentation (Node side)
SEG_OVERLAP = (0, 16, 16)        # z y x, tile overlap the manifest advertises (slice-wise models need none in z)
# Inference tile (z y x) the manifest advertises: a typical adult lung crop on the (1, 1, 2.5) mm grid
# (about 112 x 184 x 272) fits one tile, which bench/models.ts measured 3.6x faster than 32x96x96 tiles
# (overlap work and per-run overhead) at about 1 GB peak; larger crops are tiled.
INFER_TILE = (128, 224, 288)
CLS_SHAPE = (32, 96, 96)         # z y x, classifier input size
CROP_MARGIN = [5, 5, 2]          # voxels x y z around the lung bounding box (5 mm each way)
LESION_THRESHOLD = 0.5


def load_split(root):
    """Index lines of a split written by make-dataset.ts, with lazily memory-mapped arrays."""
    items = []
    with open(os.path.join(root, 'index.jsonl')) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            it = json.loads(line)
            it['dir'] = os.path.join(root, it['id'])
            items.append(it)
    return items


def dice(pred, gt):
    """Dice of two binary arrays; None when both are empty."""
    p = pred.astype(bool)
    g = gt.astype(bool)
    s = p.sum() + g.sum()
    if s == 0:
        return None
    return float(2.0 * np.logical_and(p, g).sum() / s)


def roc_points(labels, scores):
    """ROC curve [(fpr, tpr, threshold)] from the highest threshold down, and the AUC (trapezoid, ties handled)."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    P = int(labels.sum())
    N = int(len(labels) - P)
    order = np.argsort(-scores, kind='mergesort')
    s, l = scores[order], labels[order]
    pts = [(0.0, 0.0, float('inf'))]
    tp = fp = 0
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            tp += l[j]
            fp += 1 - l[j]
            j += 1
        pts.append((fp / max(N, 1), tp / max(P, 1), float(s[i])))
        i = j
    auc = 0.0
    for (x0, y0, _), (x1, y1, _) in zip(pts, pts[1:]):
        auc += (x1 - x0) * (y0 + y1) / 2
    return pts, auc


def sens_spec(labels, scores, threshold):
    labels = np.asarray(labels, dtype=int)
    pred = np.asarray(scores) >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    fn = int(np.sum(~pred & (labels == 1)))
    tn = int(np.sum(~pred & (labels == 0)))
    fp = int(np.sum(pred & (labels == 0)))
    return {
        'sensitivity': tp / max(tp + fn, 1), 'specificity': tn / max(tn + fp, 1),
        'tp': tp, 'fn': fn, 'tn': tn, 'fp': fp,
    }


def choose_threshold(labels, scores, min_sensitivity=0.95):
    """Highest threshold whose sensitivity on these cases is ≥ min_sensitivity (so specificity is as high as
    that allows), rounded down to 3 decimals so the cases that set it stay positive."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    best = 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        if sens_spec(labels, scores, t)['sensitivity'] >= min_sensitivity:
            best = t
            break
    return math.floor(best * 1000) / 1000
