"""Trains ctgate's reference models on the project's synthetic studies (make-dataset.ts output).

  nice -n 19 /usr/bin/python3 models/training/train.py --data DATA --work WORK [--seg-iters 250] [--cls-epochs 25] [--lr 2e-3]

DATA/train and DATA/val are splits made by make-dataset.ts. Writes WORK/seg.pt, WORK/cls.pt and
WORK/train-summary.json (settings, timings, loss curves, validation Dice, validation classifier scores with the
predicted lesion masks, and the operating threshold chosen on them).

1. Lesion segmentation (LesionUNetPP): random (32, 96, 96) z/y/x patches, batch 2, 70 % of them centred near a
   lesion voxel (kind-weighted: covid 0.3, lobar pneumonia 0.25, nodule 0.3, old lesion 0.15), the rest anywhere
   in the lungs; augmentation: flip (x, y), pan (random offset of the patch
   centre), zoom (random scale 0.85–1.15 of the sampled region, resized back to the patch), small intensity
   gain/offset. Loss: BCE + soft Dice (per patch) on each head (the two deep-supervision heads and the final one),
   averaged.
2. Classifier (CovidResNet): the whole lung crop resized to (32, 96, 96), channels [CT, ground-truth lesion mask];
   augmentation: flip (x), pan (crop box shifted up to ±6 % per axis), zoom (box scaled 0.9–1.1), lesion-mask
   noise (random dilation / erosion, so the net tolerates the segmentation model's errors). BCE loss.
3. Calibration on the validation split: the trained lesion model segments every validation crop (threshold 0.5),
   the classifier scores [CT, predicted mask] — as the deployed pipeline does — and the operating threshold is
   the highest one with validation sensitivity ≥ 0.95.
Optimiser: Adam, weight decay 5e-4 (the paper's), learning rate --lr (default 2e-3, cosine-annealed to 1 % of it:
the paper's 1e-4 does not converge in this CPU budget).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CLS_SHAPE, LESION_THRESHOLD, SEG_PATCH, arrays, choose_threshold, classifier_input, dice,  # noqa: E402
                    load_split, roc_points, segment_volume, sens_spec, take_box)
from nets import CovidResNet, LesionUNetPP, count_params  # noqa: E402


def log(*a):
    print(*a, flush=True)


class Study:
    """A study's memory-mapped arrays plus sampled lesion / lung voxel coordinates for patch centres."""

    def __init__(self, item, rng):
        self.item = item
        self.ct, self.lung, self.lesion = arrays(item)
        lz = np.argwhere(np.asarray(self.lesion[::1, ::2, ::2]) > 0) * np.array([1, 2, 2])
        self.lesion_pts = lz[rng.choice(len(lz), min(len(lz), 3000), replace=False)] if len(lz) else lz
        gz = np.argwhere(np.asarray(self.lung[::2, ::4, ::4]) > 0) * np.array([2, 4, 4])
        self.lung_pts = gz[rng.choice(len(gz), min(len(gz), 3000), replace=False)]


LESION_KIND_WEIGHTS = {'covid': 0.3, 'lobar-pneumonia': 0.25, 'nodule': 0.3, 'old-lesion': 0.15}


def seg_batch(studies, rng, batch, p_lesion=0.7):
    """A batch of augmented (32, 96, 96) patches and their lesion masks. With probability p_lesion a patch is
    centred near a lesion voxel of a study drawn kind-balanced (LESION_KIND_WEIGHTS: the rarer non-COVID lesions
    get as many patches as they need to be learnt), otherwise anywhere in the lungs of any study."""
    xs, ys = [], []
    P = np.array(SEG_PATCH)
    by_kind = {}
    for s in studies:
        if len(s.lesion_pts):
            by_kind.setdefault(s.item['kind'], []).append(s)
    kinds = sorted(by_kind)
    weights = np.array([LESION_KIND_WEIGHTS.get(k, 0.2) for k in kinds])
    for _ in range(batch):
        if kinds and rng.random() < p_lesion:
            group = by_kind[kinds[rng.choice(len(kinds), p=weights / weights.sum())]]
            s = group[rng.integers(len(group))]
            c = s.lesion_pts[rng.integers(len(s.lesion_pts))]
        else:
            s = studies[rng.integers(len(studies))]
            c = s.lung_pts[rng.integers(len(s.lung_pts))]
        scale = rng.uniform(0.85, 1.15)                           # zoom
        size = np.maximum(np.round(P * scale).astype(int), 8)
        c = c + np.round(rng.uniform(-0.25, 0.25, 3) * P).astype(int)  # pan
        lo = c - size // 2
        box = (lo[0], lo[0] + size[0], lo[1], lo[1] + size[1], lo[2], lo[2] + size[2])
        ct = torch.from_numpy(take_box(s.ct, box))[None, None]
        m = torch.from_numpy(take_box(s.lesion, box))[None, None]
        if tuple(size) != SEG_PATCH:
            ct = F.interpolate(ct, size=SEG_PATCH, mode='trilinear', align_corners=False)
            m = (F.interpolate(m, size=SEG_PATCH, mode='trilinear', align_corners=False) >= 0.5).float()
        if rng.random() < 0.5:
            ct, m = ct.flip(4), m.flip(4)
        if rng.random() < 0.5:
            ct, m = ct.flip(3), m.flip(3)
        ct = (ct * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)).clamp(0, 1)
        xs.append(ct)
        ys.append(m)
    return torch.cat(xs), torch.cat(ys)


def seg_loss(logits_list, y):
    """BCE + soft Dice (per patch, then averaged over the batch) on each head, averaged over the heads."""
    total = 0.0
    dims = tuple(range(1, y.dim()))
    for lg in logits_list:
        bce = F.binary_cross_entropy_with_logits(lg, y)
        p = torch.sigmoid(lg)
        d = 1 - (2 * (p * y).sum(dims) + 1) / (p.sum(dims) + y.sum(dims) + 1)
        total = total + bce + d.mean()
    return total / len(logits_list)


def cosine_lr(opt, base, it, total):
    lr = base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * it / max(total, 1))))
    for g in opt.param_groups:
        g['lr'] = lr
    return lr


def train_seg(studies, args, rng):
    torch.manual_seed(args.seed)
    model = LesionUNetPP()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    model.train()
    losses = []
    t0 = time.time()
    for it in range(args.seg_iters):
        cosine_lr(opt, args.lr, it, args.seg_iters)
        x, y = seg_batch(studies, rng, args.seg_batch)
        loss = seg_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if (it + 1) % 10 == 0 or it == 0:
            log(f'seg it {it + 1}/{args.seg_iters} loss {np.mean(losses[-10:]):.4f} ({time.time() - t0:.0f} s)')
    return model, losses, time.time() - t0


CONTEXT = 1.12   # cached classifier context: the crop box enlarged 12 % per axis (room for pan / zoom)
CONTEXT_SHAPE = tuple(int(round(n * CONTEXT)) for n in CLS_SHAPE)


def cls_context(item):
    """The study's crop (CT + lesion mask) with a 6 % margin each side, resized once to CONTEXT_SHAPE; training
    samples pan/zoom boxes from it (a second, small trilinear resize) instead of re-reading the full crop."""
    ct, _, lesion = arrays(item)
    box = []
    for n in ct.shape:
        extra = int(round(n * (CONTEXT - 1) / 2))
        box += [-extra, n + extra]
    t = torch.from_numpy(np.stack([take_box(ct, box), take_box(lesion, box)]))[None]
    return F.interpolate(t, size=CONTEXT_SHAPE, mode='trilinear', align_corners=True)


def cls_sample(ctx, rng):
    """Augmented classifier input from a cached context: pan ±6 %, zoom 0.9–1.1, flip x, mask noise, intensity."""
    lo, hi = [], []
    for n, m in zip(CLS_SHAPE, CONTEXT_SHAPE):
        size = n * rng.uniform(0.9, 1.1)                     # zoom
        centre = (m - 1) / 2 + n * rng.uniform(-0.06, 0.06)  # pan
        lo.append(centre - (size - 1) / 2)
        hi.append(centre + (size - 1) / 2)
    # affine_grid / grid_sample in normalised coordinates (align_corners=True: -1 and 1 are the end voxel centres)
    theta = torch.zeros(1, 3, 4)
    for a, (l, h, m) in enumerate(zip(lo, hi, CONTEXT_SHAPE)):
        row = 2 - a                                          # grid's x, y, z are the tensor's W, H, D
        scale = (h - l) / (m - 1)
        theta[0, row, row] = scale
        theta[0, row, 3] = (l + h) / (m - 1) - 1
    grid = F.affine_grid(theta, (1, 2, *CLS_SHAPE), align_corners=True)
    x = F.grid_sample(ctx, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    if rng.random() < 0.5:
        x = x.flip(4)
    r = rng.random()
    if r < 0.2:
        x[:, 1:] = F.max_pool3d(x[:, 1:], 3, 1, 1)            # dilated mask
    elif r < 0.4:
        x[:, 1:] = -F.max_pool3d(-x[:, 1:], 3, 1, 1)          # eroded mask
    elif r < 0.5:
        x[:, 1:] = x[:, 1:] * (torch.rand(1, 1, 4, 12, 12) > 0.3).float().repeat_interleave(8, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)
    x[:, :1] = (x[:, :1] * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)).clamp(0, 1)
    return x


def train_cls(items, args, rng):
    torch.manual_seed(args.seed + 1)
    model = CovidResNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    labels = np.array([it['label'] for it in items])
    t0 = time.time()
    contexts = [cls_context(it) for it in items]
    log(f'cls contexts cached ({time.time() - t0:.0f} s)')
    losses = []
    steps_per_epoch = math.ceil(len(items) / args.cls_batch)
    total = steps_per_epoch * args.cls_epochs
    step = 0
    t0 = time.time()
    for ep in range(args.cls_epochs):
        model.train()
        order = rng.permutation(len(items))
        ep_losses = []
        for b in range(steps_per_epoch):
            idx = order[b * args.cls_batch:(b + 1) * args.cls_batch]
            x = torch.cat([cls_sample(contexts[i], rng) for i in idx])
            y = torch.from_numpy(labels[idx].astype(np.float32))[:, None]
            cosine_lr(opt, args.lr, step, total)
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            ep_losses.append(float(loss))
        losses.append(float(np.mean(ep_losses)))
        log(f'cls epoch {ep + 1}/{args.cls_epochs} loss {losses[-1]:.4f} ({time.time() - t0:.0f} s)')
    return model, losses, time.time() - t0


@torch.no_grad()
def calibrate(seg, cls, items):
    """Pipeline on the validation split: predicted lesion masks → classifier scores → operating threshold."""
    seg.eval()
    cls.eval()
    rows = []
    t0 = time.time()
    for it in items:
        ct, lung, lesion = arrays(it)
        prob = segment_volume(seg, np.asarray(ct))
        pred = (prob >= LESION_THRESHOLD).astype(np.float32)
        d = dice(pred, np.asarray(lesion))
        both = cls(torch.cat([classifier_input(ct, pred), classifier_input(ct, lesion)]))  # batch of 2: fast conv path
        p_pred, p_gt = float(both[0, 0]), float(both[1, 0])
        rows.append({'id': it['id'], 'kind': it['kind'], 'label': it['label'], 'dice': d,
                     'predLesionVoxels': int(pred.sum()), 'lesionVoxels': it['lesionVoxels'],
                     'probPredictedMask': p_pred, 'probTruthMask': p_gt})
        log(f"val {it['id']} {it['kind']:15s} dice {d if d is None else round(d, 3)} p(pred mask) {p_pred:.3f} p(gt mask) {p_gt:.3f}")
    labels = [r['label'] for r in rows]
    scores = [r['probPredictedMask'] for r in rows]
    threshold = choose_threshold(labels, scores, 0.95)
    _, auc = roc_points(labels, scores)
    dices = [r['dice'] for r in rows if r['dice'] is not None and r['lesionVoxels'] > 0]
    summary = {
        'cases': len(rows), 'positives': int(sum(labels)), 'threshold': threshold, 'auc': auc,
        'atThreshold': sens_spec(labels, scores, threshold),
        'aucTruthMask': roc_points(labels, [r['probTruthMask'] for r in rows])[1],
        'lesionDiceMean': float(np.mean(dices)) if dices else None,
        'lesionDiceByKind': {k: float(np.mean([r['dice'] for r in rows if r['kind'] == k and r['dice'] is not None and r['lesionVoxels'] > 0]))
                             for k in sorted({r['kind'] for r in rows if r['lesionVoxels'] > 0})},
        'seconds': time.time() - t0,
    }
    return summary, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True)
    ap.add_argument('--work', required=True)
    ap.add_argument('--seg-iters', type=int, default=250)
    ap.add_argument('--seg-batch', type=int, default=2)
    ap.add_argument('--cls-epochs', type=int, default=25)
    ap.add_argument('--cls-batch', type=int, default=8)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    train = load_split(os.path.join(args.data, 'train'))
    val = load_split(os.path.join(args.data, 'val'))
    log(f'train {len(train)} studies, val {len(val)} studies')
    t_all = time.time()
    cpu_all = time.process_time()
    studies = [Study(it, rng) for it in train]
    seg, seg_losses, seg_s = train_seg(studies, args, rng)
    torch.save(seg.state_dict(), os.path.join(args.work, 'seg.pt'))
    cls, cls_losses, cls_s = train_cls(train, args, rng)
    torch.save(cls.state_dict(), os.path.join(args.work, 'cls.pt'))
    val_summary, val_rows = calibrate(seg, cls, val)

    def kinds(items):
        out = {}
        for it in items:
            out[it['kind']] = out.get(it['kind'], 0) + 1
        return out

    summary = {
        'settings': {
            'optimizer': 'Adam', 'lr': args.lr, 'lrSchedule': 'cosine to 1% of lr', 'weightDecay': 5e-4,
            'seg': {'iterations': args.seg_iters, 'batch': args.seg_batch, 'patch': list(SEG_PATCH),
                    'loss': 'BCE + soft Dice (per patch) on each head (2 deep-supervision heads + the final head), averaged',
                    'augmentation': 'flip x/y, pan ±25% of patch, zoom 0.85-1.15, intensity gain ±5% offset ±0.02',
                    'sampling': '70% of patches centred near a lesion voxel (study kind drawn with weights ' + ', '.join(f'{k} {v}' for k, v in LESION_KIND_WEIGHTS.items()) + '), 30% anywhere in the lungs'},
            'cls': {'epochs': args.cls_epochs, 'batch': args.cls_batch, 'input': list(CLS_SHAPE),
                    'channel2': 'ground-truth lesion mask (randomly dilated 20% / eroded 20% / partly dropped 10% of the time)',
                    'augmentation': 'flip x, pan ±6%, zoom 0.9-1.1 of the crop box, intensity gain ±5% offset ±0.02'},
            'seed': args.seed, 'threads': args.threads, 'torch': torch.__version__,
        },
        'data': {'train': {'studies': len(train), 'kinds': kinds(train), 'seeds': sorted({it['seed'] // 100000 for it in train})},
                 'val': {'studies': len(val), 'kinds': kinds(val), 'seeds': sorted({it['seed'] // 100000 for it in val})},
                 'generator': train[0]['source'] if train else None},
        'params': {'seg': count_params(seg), 'cls': count_params(cls)},
        'seconds': {'seg': seg_s, 'cls': cls_s, 'calibration': val_summary['seconds'], 'total': time.time() - t_all,
                    'cpuTotal': time.process_time() - cpu_all},
        'losses': {'seg': seg_losses, 'cls': cls_losses},
        'validation': val_summary,
        'validationCases': val_rows,
    }
    with open(os.path.join(args.work, 'train-summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    log(f"done in {summary['seconds']['total']:.0f} s; val dice {val_summary['lesionDiceMean']}, val AUC {val_summary['auc']:.3f}, "
        f"threshold {val_summary['threshold']} → {val_summary['atThreshold']}")


if __name__ == '__main__':
    main()
