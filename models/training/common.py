"""Shared helpers for ctgate's model training, export and evaluation (data access, pipeline steps, metrics)."""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

# The paper's pipeline (DESIGN.md) as this project's models use it.
SPACING = [1, 1, 2.5]            # mm, x y z
WINDOW = [-1024, 350]            # HU, lesion segmentation and classification
LUNG_WINDOW = [-150, 350]        # HU, classical lung segmentation (Node side)
SEG_PATCH = (32, 96, 96)         # z y x
SEG_OVERLAP = (8, 16, 16)        # z y x, sliding-window overlap the manifest advertises
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


def arrays(item, mmap=True):
    mode = 'r' if mmap else None
    ct = np.load(os.path.join(item['dir'], 'ct.npy'), mmap_mode=mode)
    lung = np.load(os.path.join(item['dir'], 'lung.npy'), mmap_mode=mode)
    lesion = np.load(os.path.join(item['dir'], 'lesion.npy'), mmap_mode=mode)
    return ct, lung, lesion


def classifier_input(ct, mask, box=None):
    """The classifier's input: [CT, lesion mask] of the lung crop resized to CLS_SHAPE, trilinear with aligned
    corners (output voxel o samples input coordinate o·(n_in−1)/(n_out−1) — the grid that spans the same first and
    last voxel centres, which is what src/imaging/resample.ts does for such a geometry). box = optional sub-box
    (z0, z1, y0, y1, x0, x1) for augmentation; outside the array it is padded with 0."""
    ct = np.asarray(ct, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    if box is not None:
        ct = take_box(ct, box)
        mask = take_box(mask, box)
    t = torch.from_numpy(np.stack([ct, mask]))[None]
    return F.interpolate(t, size=CLS_SHAPE, mode='trilinear', align_corners=True)


def take_box(a, box):
    """a[z0:z1, y0:y1, x0:x1] with zero padding where the box leaves the array."""
    z0, z1, y0, y1, x0, x1 = box
    out = np.zeros((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
    D, H, W = a.shape
    sz0, sy0, sx0 = max(z0, 0), max(y0, 0), max(x0, 0)
    sz1, sy1, sx1 = min(z1, D), min(y1, H), min(x1, W)
    if sz1 > sz0 and sy1 > sy0 and sx1 > sx0:
        out[sz0 - z0:sz1 - z0, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = a[sz0:sz1, sy0:sy1, sx0:sx1]
    return out


@torch.no_grad()
def segment_volume(model, ct, chunk_halo=16):
    """Lesion probability for a whole crop (D, H, W) with the fully convolutional U-Net++: pads to multiples of 8
    (zeros = air), and for speed runs two z-halves (with a 16-slice halo each side of the cut) as one batch of 2."""
    model.eval()
    D, H, W = ct.shape
    Dp, Hp, Wp = [int(math.ceil(n / 8) * 8) for n in (D, H, W)]
    x = np.zeros((Dp, Hp, Wp), dtype=np.float32)
    x[:D, :H, :W] = ct
    if Dp >= 64:
        half = int(math.ceil(Dp / 16) * 8)
        a = x[:half + chunk_halo]
        b = x[half - chunk_halo:]
        n = max(a.shape[0], b.shape[0])
        batch = np.zeros((2, 1, n, Hp, Wp), dtype=np.float32)
        batch[0, 0, :a.shape[0]] = a
        batch[1, 0, :b.shape[0]] = b
        out = model(torch.from_numpy(batch)).numpy()
        prob = np.concatenate([out[0, 0, :half], out[1, 0, chunk_halo:chunk_halo + Dp - half]], axis=0)
    else:
        prob = model(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    return prob[:D, :H, :W]


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
