"""Trains ctgate's 0.2 models on real COVID-19 CT slices (real_data.py) plus the project's synthetic phantoms.

  /usr/bin/python3 models/training/train_real.py --phantoms DATA/train --work WORK [--seg-iters N] [--cls-iters N]

Lesion model (SliceUNetPP, classes 3): per axial slice on the 1 mm grid, window [-1024, 350] -> [0, 1].
  Data per batch: doctor-labelled training slices (binary masks; ground-glass / consolidation labels from the
  multiclass set train the kind head) 30 %, pseudo-labelled slices (Semi-Inf-Net soft masks, 18 of 20 volumes)
  55 %, phantom slices (every lesion kind: covid, lobar pneumonia, nodule, old lesion; healthy) 15 %.
  Augmentation: the eight flips/rotations, zoom 0.8-1.25 (covers the unknown pixel size), pan (random crop),
  intensity (contrast x0.85-1.15 about the lung value, offset +-0.08 = +-110 HU: covers the JPEG-to-HU
  calibration error), noise. Loss: BCE + soft Dice on each deep-supervision head and the final head; the kind head
  cross-entropy on lesion pixels of the doctor slices.
Classifier (SliceResNet): per slice [CT, lesion mask] of the lung box resized to 96x96, global max; trained on
  single slices: positives = real slices with lesion >= 0.5 % of the crop and phantom covid slices; negatives =
  real slices without lesion (< 0.05 %) and phantom healthy / lobar-pneumonia / nodule / old-lesion slices. The
  mask channel is the lesion model's own output (60 %) or the label (40 %).
Threshold: on the validation data (2 held-out pseudo-label volumes, phantom validation studies), the highest
  threshold with sensitivity >= 0.95, scored per study as deployed (32 slices of the lung box, predicted mask).

Classifier 0.3 (--sars, issue 17): adds REAL negatives and positives from one source, sars-cov-2-ct-slices (Soares
  et al. 2020: 600 COVID-19, 600 non-COVID-19 incl. other lung disease), split by image 60/20/20 (real_data.sars_split;
  the test 20 % is never read here). Each training slice is mapped as the service sees it (real_data.single_slice_input:
  per-image HU calibration, 1 mm grid, lung box + 5 px) twice: as published, and re-encoded as JPEG (quality 35-90)
  with a random pixel size 0.6-0.85 mm; the lesion mask is the shipped lesion model's. Half of each batch's positives
  and negatives come from this source (both classes share its format, crop and calibration), the other half from the
  0.2 data. Extra augmentation for every real slice: JPEG re-encoding of the crop (quality 30-95), a zoom-in crop up to
  8 % per side. Operating point (--min-sens): the highest threshold with sensitivity >= 0.90 on the sars-cov-2-ct-slices
  validation COVID-19 slices AND >= 0.90 on the other validation positives (held-out pseudo-label volumes and slices,
  phantom covid studies); specificity is whatever that leaves on the validation negatives.
  --cross-source: no COVID-SemiSeg slice at all (sars-cov-2-ct-slices + phantoms only), to test on COVID-SemiSeg.
Whole real volumes (--volume DIR=LABEL, repeatable; DIR written by dump-volume.ts with the service's own
  preprocessing): each batch adds one positive and one negative whole-volume stack (a contiguous 10-16 of the 32
  slices, augmented), scored as deployed (max over slices); the training pseudo-label volumes join as positive stacks,
  and half the positive stacks come from the --volume positives (same source as the negatives). --init-cls fine-tunes
  an earlier classifier. Evaluated on 2026-12-05 and not shipped (MODEL_CARD.md).
"""
import argparse
import io
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import real_data as R  # noqa: E402
from common import choose_threshold, dice, load_split, roc_points, sens_spec  # noqa: E402
from nets import SliceResNet, SliceUNetPP, count_params  # noqa: E402

PATCH = 160
CLS_HW = 96
CLS_D = 32
LUNG01 = (R.LUNG_PEAK_HU - R.WINDOW[0]) / (R.WINDOW[1] - R.WINDOW[0])
VAL_VOLUMES = ('Data-1_coronacases_org_006', 'Data-1_radiopaedia_org_covid-19-pneumonia-14_85914_0-dcm')
T0 = time.time()


def log(*a):
    print(f'[{time.time() - T0:6.0f} s]', *a, flush=True)


# ----------------------------------------------------------------------------------------------------- data

def phantom_slices(root, every=2):
    """Axial slices of the phantom crops: ct (1 mm grid, windowed), lesion (0/1), lung bbox, kind."""
    out = []
    for it in load_split(root):
        ct = np.load(os.path.join(it['dir'], 'ct.npy'))
        lung = np.load(os.path.join(it['dir'], 'lung.npy'))
        les = np.load(os.path.join(it['dir'], 'lesion.npy'))
        for k in range(0, ct.shape[0], every):
            if lung[k].sum() < 500:
                continue
            ys, xs = np.nonzero(lung[k])
            out.append({'name': f"{it['id']}:{k}", 'source': 'phantom', 'kind': it['kind'], 'ct': ct[k].copy(),
                        'mask': les[k].astype(np.float32), 'box': (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)})
    return out


def phantom_studies(root):
    items = []
    for it in load_split(root):
        ct = np.load(os.path.join(it['dir'], 'ct.npy'))
        les = np.load(os.path.join(it['dir'], 'lesion.npy'))
        items.append({'id': it['id'], 'kind': it['kind'], 'label': it['label'], 'ct': ct, 'lesion': les})
    return items


def d4(a, k, flip):
    a = np.rot90(a, k)
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


def zoom(a, f, mode='bilinear'):
    h, w = a.shape
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(max(8, int(h * f)), max(8, int(w * f))), mode=mode, align_corners=True)[0, 0].numpy()


def crop_pad(arrs, size, rng):
    h, w = arrs[0].shape
    y0 = rng.randint(0, h - size + 1) if h > size else -rng.randint(0, size - h + 1)
    x0 = rng.randint(0, w - size + 1) if w > size else -rng.randint(0, size - w + 1)
    out = []
    for a in arrs:
        o = np.zeros((size, size), dtype=np.float32)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + size, h), min(x0 + size, w)
        o[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = a[sy0:sy1, sx0:sx1]
        out.append(o)
    return out


def intensity(ct, rng):
    c = LUNG01
    ct = (ct - c) * rng.uniform(0.85, 1.15) + c + rng.uniform(-0.08, 0.08)
    ct = ct + rng.normal(0, rng.uniform(0, 0.015), ct.shape)
    return np.clip(ct, 0, 1).astype(np.float32)


def seg_sample(item, rng):
    ct, mask = item['ct'], item['mask']
    ggo, cons = item.get('ggo'), item.get('cons')
    if item['source'] == 'phantom':  # a random part of the slice around the lungs
        y0, y1, x0, x1 = item['box']
        ct, mask = ct[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5], mask[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5]
    f = rng.uniform(0.8, 1.25)
    arrs = [ct, mask] + ([ggo, cons] if ggo is not None else [])
    arrs = [zoom(a, f) for a in arrs]
    k, fl = rng.randint(4), rng.rand() < 0.5
    arrs = [d4(a, k, fl) for a in arrs]
    arrs = crop_pad(arrs, PATCH, rng)
    arrs[0] = intensity(arrs[0], rng)
    kind = np.full((PATCH, PATCH), -1, dtype=np.int64)
    if ggo is not None:
        kind[arrs[2] >= 0.5] = 0
        kind[arrs[3] >= 0.5] = 1
    return arrs[0], arrs[1], kind


def seg_batch(pools, weights, rng, batch):
    xs, ys, ks = [], [], []
    for _ in range(batch):
        pool = pools[rng.choice(len(pools), p=weights)]
        x, y, k = seg_sample(pool[rng.randint(len(pool))], rng)
        xs.append(x)
        ys.append(y)
        ks.append(k)
    t = lambda a: torch.from_numpy(np.stack(a))[:, None, None]  # noqa: E731
    return t(xs), t(ys), torch.from_numpy(np.stack(ks))[:, None]


def seg_loss(logits, y, kind_logits, kind):
    total = 0.0
    dims = tuple(range(1, y.dim()))
    for lg in logits:
        bce = F.binary_cross_entropy_with_logits(lg, y)
        p = torch.sigmoid(lg)
        d = 1 - (2 * (p * y).sum(dims) + 1) / (p.sum(dims) + y.sum(dims) + 1)
        total = total + bce + d.mean()
    total = total / len(logits)
    if kind_logits is not None and (kind >= 0).any():
        total = total + 0.5 * F.cross_entropy(kind_logits[:, :, 0], kind[:, 0], ignore_index=-1)
    return total


def cosine_lr(opt, base, it, total, warm=30):
    lr = base * min(1.0, (it + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * it / max(total, 1))))
    for g in opt.param_groups:
        g['lr'] = lr
    return lr


@torch.no_grad()
def predict_slices(seg, cts, batch=8):
    """Lesion probability (and kind probabilities) for 2-D slices of any size: sorted by size, batched, padded
    to multiples of 16 with 0 (as the service pads)."""
    seg.eval()
    out = [None] * len(cts)
    order = sorted(range(len(cts)), key=lambda i: cts[i].shape)
    for b in range(0, len(order), batch):
        idx = order[b:b + batch]
        hp = int(math.ceil(max(cts[i].shape[0] for i in idx) / 16) * 16)
        wp = int(math.ceil(max(cts[i].shape[1] for i in idx) / 16) * 16)
        x = np.zeros((len(idx), 1, 1, hp, wp), dtype=np.float32)
        for n, i in enumerate(idx):
            h, w = cts[i].shape
            x[n, 0, 0, :h, :w] = cts[i]
        y = seg(torch.from_numpy(x)).numpy()
        for n, i in enumerate(idx):
            h, w = cts[i].shape
            out[i] = y[n, :, 0, :h, :w]
    return out


def seg_dice_report(seg, items):
    rows = []
    probs = predict_slices(seg, [it['ct'] for it in items])
    for it, p in zip(items, probs):
        d = dice(p[0] >= 0.5, it['mask'] >= 0.5)
        rows.append({'name': it['name'], 'dice': 1.0 if d is None else d})
    return rows


def train_seg(pools, weights, val, args, rng):
    torch.manual_seed(args.seed)
    model = SliceUNetPP(base=args.seg_base, classes=3)
    log(f'lesion model: {count_params(model):,} parameters')
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    losses = []
    t0 = time.time()
    for it in range(args.seg_iters):
        model.train()
        cosine_lr(opt, args.lr, it, args.seg_iters)
        x, y, k = seg_batch(pools, weights, rng, args.seg_batch)
        logits, kind = model(x)
        loss = seg_loss(logits, y, kind, k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if (it + 1) % 50 == 0 or it == 0:
            log(f'seg it {it + 1}/{args.seg_iters} loss {np.mean(losses[-50:]):.4f} ({time.time() - t0:.0f} s)')
        if (it + 1) % 500 == 0 and val:
            d = [r['dice'] for r in seg_dice_report(model, val)]
            log(f'seg it {it + 1}: validation Dice (held-out pseudo volumes, vs model-made masks) mean {np.mean(d):.3f}')
    model.eval()
    return model, losses, time.time() - t0


# ----------------------------------------------------------------------------------------------- classifier

def resize2(a, hw=CLS_HW):
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(hw, hw), mode='bilinear', align_corners=True)[0, 0].numpy()


def jpeg_again(ct, rng, lo=30, hi=95):
    """The crop re-encoded as an 8-bit JPEG of random quality (format noise: the real slices are JPEGs)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.clip(ct * 255 + 0.5, 0, 255).astype(np.uint8)).save(buf, format='JPEG', quality=int(rng.randint(lo, hi + 1)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0


def cls_sample(item, rng):
    ct, mask = item['ct'], item['pred'] if rng.rand() < 0.6 else (item['mask'] >= 0.5).astype(np.float32)
    if 'box' in item:
        y0, y1, x0, x1 = item['box']
        ct, mask = ct[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5], mask[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5]
    if CLS_AUG_EXTRA and item.get('source') != 'phantom':
        if rng.rand() < 0.4:
            ct = jpeg_again(ct, rng)
        if rng.rand() < 0.3:  # zoom in: the lung box cut by up to 8 % per side
            h, w = ct.shape
            a, b, c, d = (int(v) for v in rng.uniform(0, 0.08, 4) * [h, h, w, w])
            ct, mask = ct[a:h - b], mask[a:h - b]
            ct, mask = ct[:, c:w - d], mask[:, c:w - d]
    h, w = ct.shape
    # The service's lung box is the whole study's: a slice may fill only part of it (zoom out, pad with air).
    if rng.rand() < 0.5:
        ph, pw = int(h * rng.uniform(0, 0.3)), int(w * rng.uniform(0, 0.3))
        oy, ox = rng.randint(0, ph + 1), rng.randint(0, pw + 1)
        c2 = np.zeros((h + ph, w + pw), np.float32)
        m2 = np.zeros_like(c2)
        c2[oy:oy + h, ox:ox + w] = ct
        m2[oy:oy + h, ox:ox + w] = mask
        ct, mask = c2, m2
    k, fl = rng.randint(4), rng.rand() < 0.5
    ct, mask = d4(ct, k, fl), d4(mask, k, fl)
    return np.stack([intensity(resize2(ct), rng), resize2(mask)])


def with_nodules(item, rng):
    """A real lesion-free slice with 1-3 pasted nodules (solid, or part-solid: a solid core in a ground-glass halo)
    inside its aerated lung: the focal, non-COVID lesions the paper lists among its negatives (tumours, old
    lesions), on real anatomy. Returns (ct, nodule mask)."""
    ct = item['ct'].copy()
    h, w = ct.shape
    lung = np.argwhere(ct < R.window01(np.array(-500.0)))
    mask = np.zeros_like(ct)
    if len(lung) < 50:
        return ct, mask
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.randint(1, 4)):
        cy, cx = lung[rng.randint(len(lung))]
        r = rng.uniform(3, 12)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        core = np.clip((r - d) / 1.5 + 0.5, 0, 1)
        hu = rng.uniform(-60, 80)
        if rng.rand() < 0.3:  # part-solid
            halo = np.clip((1.8 * r - d) / 2.0 + 0.5, 0, 1)
            ct = ct * (1 - halo) + halo * R.window01(np.array(rng.uniform(-650, -450)))
            mask = np.maximum(mask, (halo > 0.5).astype(np.float32))
        ct = ct * (1 - core) + core * R.window01(np.array(hu))
        mask = np.maximum(mask, (core > 0.5).astype(np.float32))
    ct = np.clip(ct + rng.normal(0, 0.006, ct.shape), 0, 1).astype(np.float32)
    return ct, mask


CLS_AUG_EXTRA = False


def load_volume_stack(d):
    """A dump-volume.ts output: the classifier's input for one real volume exactly as the service made it."""
    with open(os.path.join(d, 'meta.json')) as f:
        meta = json.load(f)
    x = np.fromfile(os.path.join(d, 'classifier-input.f32'), dtype='<f4').reshape(meta['classifierShape'])
    return {'name': os.path.basename(os.path.normpath(d)), 'x': x, 'meta': meta}


VOLUME_SUBSTACK = (10, 16)  # slices of the 32 per volume sample: the max over them still spans apex or base often


def volume_sample(vol, rng):
    """A whole-volume stack [2, D, 96, 96], augmented (flip, contrast/offset/noise, a mask channel a little eroded
    or dilated, a contiguous sub-stack of at least half the slices); the max over its slices is what the service
    scores, so a negative volume teaches every slice of it, apices and bases included, to stay low."""
    x = vol['x'].copy()
    d = x.shape[1]
    n = rng.randint(min(VOLUME_SUBSTACK), min(max(VOLUME_SUBSTACK), d) + 1)
    z0 = rng.randint(0, d - n + 1)
    ct, m = x[0, z0:z0 + n], x[1, z0:z0 + n]
    if rng.rand() < 0.5:
        ct, m = ct[:, :, ::-1], m[:, :, ::-1]
    ct = intensity(np.ascontiguousarray(ct), rng)
    r = rng.rand()
    if r < 0.25:
        m = F.max_pool3d(torch.from_numpy(np.ascontiguousarray(m))[None, None], (1, 3, 3), 1, (0, 1, 1))[0, 0].numpy()
    elif r < 0.5:
        m = -F.max_pool3d(-torch.from_numpy(np.ascontiguousarray(m))[None, None], (1, 3, 3), 1, (0, 1, 1))[0, 0].numpy()
    return np.stack([ct, np.ascontiguousarray(m, dtype=np.float32)])


def train_cls(pos, neg_real, neg_nodule, neg_phantom, args, rng, sars_pos=(), sars_neg=(), volumes=()):
    torch.manual_seed(args.seed + 1)
    model = SliceResNet()
    if args.init_cls:
        # Fine-tuning: start from an earlier classifier (its ONNX contract and architecture are unchanged).
        model.load_state_dict(torch.load(args.init_cls))
        log(f'classifier initialised from {args.init_cls}')
    log(f'classifier: {count_params(model):,} parameters; positives {len(pos)}, real negatives {len(neg_real)} '
        f'(+ {len(neg_nodule)} of them with pasted nodules), phantom negatives {len(neg_phantom)}; '
        f'sars-cov-2-ct-slices positives {len(sars_pos)}, negatives {len(sars_neg)}')
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    losses = []
    t0 = time.time()
    for it in range(args.cls_iters):
        model.train()
        cosine_lr(opt, args.lr, it, args.cls_iters)
        xs, ys = [], []
        for b in range(args.cls_batch):
            use_sars = len(sars_pos) > 0 and rng.rand() < args.sars_share
            if b % 2 == 0:
                pool, label = (sars_pos if use_sars else pos), 1.0
            elif use_sars:
                pool, label = sars_neg, 0.0
            else:
                r = rng.rand()
                pools = [(p, w) for p, w in ((neg_real, 0.35), (neg_nodule, 0.3), (neg_phantom, 0.35)) if len(p)]
                ws = np.array([w for _, w in pools]) / sum(w for _, w in pools)
                pool, label = pools[int(np.searchsorted(np.cumsum(ws), r * 0.999999))][0], 0.0
            xs.append(cls_sample(pool[rng.randint(len(pool))], rng))
            ys.append(label)
        x = torch.from_numpy(np.stack(xs))[:, :, None]
        y = torch.tensor(ys)[:, None]
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        if volumes:
            # Whole real volumes, one positive and one negative per iteration (label-balanced), scored as deployed.
            vl = 0.0
            for label in (1, 0):
                group = [v for v in volumes if v['label'] == label]
                # half the positives from the real DICOM volumes (same source as the negatives), half from the rest
                dicom = [v for v in group if v.get('source') == 'dicom']
                if label == 1 and dicom and len(dicom) < len(group) and rng.rand() < 0.5:
                    group = dicom
                elif label == 1 and dicom and len(dicom) < len(group):
                    group = [v for v in group if v.get('source') != 'dicom']
                if group:
                    xv = torch.from_numpy(volume_sample(group[rng.randint(len(group))], rng))[None]
                    vl = vl + F.binary_cross_entropy_with_logits(model(xv), torch.tensor([[float(label)]]))
            loss = loss + args.volume_weight * vl
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if (it + 1) % 50 == 0 or it == 0:
            log(f'cls it {it + 1}/{args.cls_iters} loss {np.mean(losses[-50:]):.4f} ({time.time() - t0:.0f} s)')
    model.eval()
    return model, losses, time.time() - t0


def study_input(cts, masks):
    """[1, 2, 32, 96, 96] from a list of slices (each its own lung crop), as the service resizes a lung box."""
    idx = np.linspace(0, len(cts) - 1, CLS_D).round().astype(int)
    x = np.stack([np.stack([resize2(cts[i]) for i in idx]), np.stack([resize2(masks[i]) for i in idx])])
    return torch.from_numpy(x)[None]


@torch.no_grad()
def phantom_study_score(seg, cls, st):
    """Deployed path on a phantom crop: lesion model per slice, then the classifier on the box resized."""
    ct = st['ct']
    probs = predict_slices(seg, list(ct))
    pred = np.stack([p[0] >= 0.5 for p in probs]).astype(np.float32)
    t = torch.from_numpy(np.stack([ct, pred]))[None]
    x = F.interpolate(t, size=(CLS_D, CLS_HW, CLS_HW), mode='trilinear', align_corners=True)
    return float(cls(x)[0, 0]), pred


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--phantoms', required=True, help='make-dataset.ts output: DIR/train (and DIR/val if present)')
    ap.add_argument('--work', required=True)
    ap.add_argument('--seg-iters', type=int, default=2000)
    ap.add_argument('--seg-batch', type=int, default=12)
    ap.add_argument('--seg-base', type=int, default=8)
    ap.add_argument('--cls-iters', type=int, default=800)
    ap.add_argument('--cls-batch', type=int, default=24)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--reuse-seg', default=None, help='seg.pt of an earlier run: train the classifier only')
    ap.add_argument('--sars', action='store_true', help='add sars-cov-2-ct-slices (train split) and its validation split (classifier 0.3)')
    ap.add_argument('--cross-source', action='store_true', help='no COVID-SemiSeg slice in the classifier data (cross-source check)')
    ap.add_argument('--min-sens', type=float, default=0.95)
    ap.add_argument('--min-spec', type=float, default=0.98, help='--sars: specificity floor on the validation non-COVID-19 slices')
    ap.add_argument('--volume', action='append', default=[], metavar='DIR=LABEL',
                    help='a real whole volume (dump-volume.ts output) as a training stack, label 1 COVID-19 / 0 not; repeatable')
    ap.add_argument('--init-cls', default=None, help='cls.pt of an earlier run: fine-tune it instead of training from scratch')
    ap.add_argument('--volume-weight', type=float, default=0.5, help='--volume: weight of the volume loss beside the slice batch')
    ap.add_argument('--sars-share', type=float, default=0.67, help='--sars: share of each batch from sars-cov-2-ct-slices')
    args = ap.parse_args()
    global CLS_AUG_EXTRA
    CLS_AUG_EXTRA = args.sars
    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(args.seed)
    os.makedirs(args.work, exist_ok=True)
    t_start, c_start = time.time(), time.process_time()

    doc_train_names, doc_test_names = R.doctor_split()
    doctor = R.load_doctor(doc_train_names)
    vols = list(R.pseudo_volumes())
    pseudo = R.load_pseudo([v for v in vols if v not in VAL_VOLUMES])
    pseudo_val = R.load_pseudo(VAL_VOLUMES)
    phantoms = phantom_slices(os.path.join(args.phantoms, 'train'))
    log(f'data: doctor train {len(doctor)} (test {len(doc_test_names)} kept out: {" ".join(doc_test_names)}), '
        f'pseudo {len(pseudo)} slices / {len(vols) - len(VAL_VOLUMES)} volumes, pseudo validation {len(pseudo_val)}, phantom slices {len(phantoms)}')

    if args.reuse_seg:
        # Classifier-only retraining on a lesion model trained before (its figures are kept from that run).
        state = torch.load(args.reuse_seg)
        seg = SliceUNetPP(base=int(state['stem.0.weight'].shape[0]), classes=3)
        seg.load_state_dict(state)
        seg.eval()
        with open(os.path.join(os.path.dirname(args.reuse_seg), 'train-summary.json')) as f:
            prev = json.load(f)['seg']
        seg_losses, seg_s = [prev['lossFirst']] * 50 + [prev['lossLast']] * 50, prev['seconds']
        args.seg_iters, args.seg_batch = prev['iters'], prev['batch']
        log(f'lesion model reused from {args.reuse_seg}')
    else:
        seg, seg_losses, seg_s = train_seg([doctor, pseudo, phantoms], [0.3, 0.55, 0.15], pseudo_val[::4], args, rng)
    torch.save(seg.state_dict(), os.path.join(args.work, 'seg.pt'))

    # Classifier data: every slice with the lesion model's own mask.
    t = time.time()
    frac = lambda it: float((it['mask'] >= 0.5).mean())  # noqa: E731
    real = doctor + pseudo[::2]
    for it, p in zip(real, predict_slices(seg, [it['ct'] for it in real])):
        it['pred'] = (p[0] >= 0.5).astype(np.float32)
    ph = phantoms[::3]
    for it, p in zip(ph, predict_slices(seg, [it['ct'] for it in ph])):
        it['pred'] = (p[0] >= 0.5).astype(np.float32)
    log(f'lesion masks for the classifier data ({time.time() - t:.0f} s)')
    if args.cross_source:
        real = []
    pos = [it for it in real if frac(it) >= 0.005] + [it for it in ph if it['kind'] == 'covid' and it['mask'].sum() >= 50]
    neg_real = [it for it in real if frac(it) < 0.0005]
    neg_ph = [it for it in ph if it['kind'] != 'covid' or it['mask'].sum() == 0]
    neg_nod = []
    for _ in range(4):
        for it in neg_real:
            c, m = with_nodules(it, rng)
            neg_nod.append({'name': it['name'] + ':nodules', 'source': 'nodules', 'ct': c, 'mask': m})
    for it, p in zip(neg_nod, predict_slices(seg, [it['ct'] for it in neg_nod])):
        it['pred'] = (p[0] >= 0.5).astype(np.float32)
    if neg_nod:
        log(f'{len(neg_nod)} nodule negatives: lesion model marks {np.mean([it["pred"].sum() > 0 for it in neg_nod]):.2f} of them')
    sars_pos, sars_neg, sars_val = [], [], []
    if args.sars:
        t = time.time()
        split = R.sars_split()
        for rel, label in split['train']:
            im = R.read_gray(os.path.join(R.SARS, rel))
            buf = io.BytesIO()
            from PIL import Image
            Image.fromarray(im).save(buf, format='JPEG', quality=int(rng.randint(35, 91)))
            im2 = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('L'))
            for k, (img, px) in enumerate(((im, R.ASSUMED_PIXEL_MM), (im2, rng.uniform(0.6, 0.85)))):
                ct, _ = R.single_slice_input(img, px)
                (sars_pos if label else sars_neg).append({'name': f'{rel}:{k}', 'source': 'sars', 'ct': ct})
        for rel, label in split['val']:
            ct, _ = R.single_slice_input(R.read_gray(os.path.join(R.SARS, rel)))
            sars_val.append({'name': rel, 'label': label, 'ct': ct})
        for group in (sars_pos, sars_neg, sars_val):
            for it, p in zip(group, predict_slices(seg, [it['ct'] for it in group])):
                it['pred'] = (p[0] >= 0.5).astype(np.float32)
                it['mask'] = it['pred']
        log(f'sars-cov-2-ct-slices: train {len(split["train"])} images ({len(sars_pos)} + {len(sars_neg)} inputs), '
            f'validation {len(sars_val)} ({time.time() - t:.0f} s)')
    volumes = []
    for spec in args.volume:
        d, label = spec.rsplit('=', 1)
        volumes.append({**load_volume_stack(d), 'label': int(label), 'source': 'dicom'})
    if volumes:
        # The training pseudo-label volumes as positive stacks too, so that "a whole volume" is not a negative-only input.
        t = time.time()
        for v in sorted({it['volume'] for it in pseudo}):
            sl = [it for it in pseudo if it['volume'] == v]
            probs = predict_slices(seg, [it['ct'] for it in sl])
            x = study_input([it['ct'] for it in sl], [(p[0] >= 0.5).astype(np.float32) for p in probs])[0].numpy()
            volumes.append({'name': v, 'x': x, 'label': 1, 'source': 'pseudo'})
        log(f'{sum(v["source"] == "pseudo" for v in volumes)} pseudo-label volumes as positive stacks ({time.time() - t:.0f} s)')
    if volumes:
        log('real training volumes: ' + ', '.join(f"{v['name']} ({v['label']})" for v in volumes))
    cls, cls_losses, cls_s = train_cls(pos, neg_real, neg_nod, neg_ph, args, rng, sars_pos, sars_neg, volumes)
    torch.save(cls.state_dict(), os.path.join(args.work, 'cls.pt'))

    # Threshold on validation data, scored per study as deployed.
    rows = []
    with torch.no_grad():
        for v in VAL_VOLUMES:
            sl = [it for it in pseudo_val if it['volume'] == v]
            probs = predict_slices(seg, [it['ct'] for it in sl])
            x = study_input([it['ct'] for it in sl], [(p[0] >= 0.5).astype(np.float32) for p in probs])
            rows.append({'id': v, 'kind': 'real covid (pseudo-label volume)', 'label': 1, 'prob': float(cls(x)[0, 0])})
            # Each slice with lesion as its own one-slice study (what a thin slab would give).
            free = [it for it in sl if frac(it) < 0.0005]
            nod = [with_nodules(it, rng) for it in free for _ in range(2)]
            for (c, _), p in zip(nod, predict_slices(seg, [c for c, _ in nod])):
                m = (p[0] >= 0.5).astype(np.float32)
                xi = torch.from_numpy(np.stack([resize2(c), resize2(m)]))[None, :, None]
                rows.append({'id': f'{v} nodules', 'kind': 'real lesion-free slice with pasted nodules', 'label': 0, 'prob': float(cls(xi)[0, 0])})
            for it, p in zip(sl, probs):
                if frac(it) >= 0.01:
                    m = (p[0] >= 0.5).astype(np.float32)
                    xi = torch.from_numpy(np.stack([resize2(it['ct']), resize2(m)]))[None, :, None]
                    rows.append({'id': it['name'], 'kind': 'real covid slice', 'label': 1, 'prob': float(cls(xi)[0, 0])})
        for it in sars_val:
            xi = torch.from_numpy(np.stack([resize2(it['ct']), resize2(it['pred'])]))[None, :, None]
            rows.append({'id': it['name'], 'kind': 'sars-cov-2-ct-slices validation ' + ('COVID-19' if it['label'] else 'non-COVID-19'),
                         'label': it['label'], 'prob': float(cls(xi)[0, 0])})
        val_root = os.path.join(args.phantoms, 'val')
        if os.path.exists(os.path.join(val_root, 'index.jsonl')):
            for st in phantom_studies(val_root):
                p, _ = phantom_study_score(seg, cls, st)
                rows.append({'id': st['id'], 'kind': st['kind'], 'label': st['label'], 'prob': p})
    labels = [r['label'] for r in rows]
    scores = [r['prob'] for r in rows]
    threshold = choose_threshold(labels, scores, args.min_sens) if 0 < sum(labels) < len(labels) else 0.5
    by_group = {}
    if sars_val:
        is_sars = [r['kind'].startswith('sars') for r in rows]
        # The study score is the max over up to 32 slices: a study-level specificity needs a slice-level one well
        # above it. Rule: the lowest threshold (so the highest sensitivity) whose specificity on the validation
        # non-COVID-19 slices of sars-cov-2-ct-slices is >= --min-spec, rounded up to 3 decimals.
        sneg = sorted((r['prob'] for r in rows if r['kind'].startswith('sars') and r['label'] == 0), reverse=True)
        n_fp = int(math.floor(len(sneg) * (1 - args.min_spec)))
        threshold = math.floor(sneg[n_fp] * 1000) / 1000 + 0.001  # above the (n_fp+1)-th highest negative score
        ts = [choose_threshold([r['label'] for r, s in zip(rows, is_sars) if s == g], [r['prob'] for r, s in zip(rows, is_sars) if s == g], args.min_sens)
              for g in (True, False)]
        for g, name in ((True, 'sarsCov2CtSlices'), (False, 'other')):
            ls = [r['label'] for r, s in zip(rows, is_sars) if s == g]
            ps = [r['prob'] for r, s in zip(rows, is_sars) if s == g]
            by_group[name] = {'cases': len(ls), 'positives': int(sum(ls)), 'thresholdAlone': ts[0 if g else 1],
                              'auc': roc_points(ls, ps)[1] if 0 < sum(ls) < len(ls) else None, 'atThreshold': sens_spec(ls, ps, threshold)}
        log(f'validation per group at {threshold:.3f}: {json.dumps(by_group)}')
    neg = [r for r in rows if r['label'] == 0]
    log(f'threshold {threshold:.3f} on {len(rows)} validation cases ({sum(labels)} positive); '
        f'negatives above it: {sum(r["prob"] >= threshold for r in neg)}/{len(neg)}')
    summary = {
        'seg': {'iters': args.seg_iters, 'batch': args.seg_batch, 'patch': PATCH, 'base': args.seg_base, 'params': count_params(seg),
                'lossFirst': float(np.mean(seg_losses[:50])), 'lossLast': float(np.mean(seg_losses[-50:])), 'seconds': seg_s},
        'cls': {'iters': args.cls_iters, 'batch': args.cls_batch, 'params': count_params(cls), 'positives': len(pos),
                'negativesReal': len(neg_real), 'negativesNodules': len(neg_nod), 'negativesPhantom': len(neg_ph),
                'sarsPositives': len(sars_pos), 'sarsNegatives': len(sars_neg),
                'volumes': [{'name': v['name'], 'label': v['label']} for v in volumes], 'volumeWeight': args.volume_weight,
                'initialisedFrom': args.init_cls,
                'lossFirst': float(np.mean(cls_losses[:50])), 'lossLast': float(np.mean(cls_losses[-50:])), 'seconds': cls_s},
        'data': {'doctorTrain': doc_train_names, 'doctorTest': doc_test_names, 'pseudoVolumesTrain': [v for v in vols if v not in VAL_VOLUMES],
                 'pseudoVolumesValidation': list(VAL_VOLUMES), 'pseudoSlicesTrain': len(pseudo), 'phantomSlices': len(phantoms),
                 'sars': {'used': bool(args.sars), 'crossSource': bool(args.cross_source), 'split': 'by image, seeded (real_data.sars_split)',
                          'seed': R.SARS_SPLIT_SEED, 'fractions': list(R.SARS_SPLIT), 'trainImages': len(sars_pos + sars_neg) // 2,
                          'valImages': len(sars_val), 'share': args.sars_share, 'minSpecificity': args.min_spec} if args.sars else None,
                 'minSensitivity': args.min_sens,
                 'calibration': {'doctor': doctor[0]['calibration'] if doctor else None}},
        'threshold': threshold, 'validation': {'cases': len(rows), 'positives': int(sum(labels)), 'auc': roc_points(labels, scores)[1] if 0 < sum(labels) < len(labels) else None,
                                               'atThreshold': sens_spec(labels, scores, threshold), 'byGroup': by_group, 'rows': rows},
        'optimizer': {'optimizer': 'Adam', 'lr': args.lr, 'lrSchedule': 'warm-up 30 iterations, cosine to 2 % of lr', 'weightDecay': 5e-4},
        'seconds': {'total': time.time() - t_start, 'cpu': time.process_time() - c_start, 'threads': args.threads},
        'torch': torch.__version__,
    }
    with open(os.path.join(args.work, 'train-summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    log(f"done: {summary['seconds']['total']:.0f} s wall, {summary['seconds']['cpu']:.0f} s CPU")


if __name__ == '__main__':
    main()
