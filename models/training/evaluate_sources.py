"""Per-source evaluation of the shipped models (issue 17: "a positive means some opacity"): sensitivity,
specificity and AUC with 95 % confidence intervals on real data from other sources than training, and the category
(covid-19-like / other-opacity / no-significant-opacity) the service gives.

  /usr/bin/python3 models/training/evaluate_sources.py [--models models] [--out FILE.json] [--no-volumes]

Sources (../shared/data, licences in its README):
* sars-cov-2-ct-slices — 600 COVID-19 and 600 non-COVID-19 slices (Soares et al. 2020; the non-COVID patients
  include other lung diseases), 8-bit lung-window JPEGs without HU or pixel size. Mapped to the service's input as
  real_data.py maps the COVID-SemiSeg JPEGs: two-peak HU calibration (here per image: the set names no volumes, and a
  calibration per class would hand the label to the input), ASSUMED_PIXEL_MM to the 1 mm grid, window
  [-1024, 350] -> [0, 1], cropped to the lung box + 5 px as the service crops (real_data.lung_bbox), lesion model,
  then the classifier on [CT, lesion mask] of the slice (a slab of one slice: the slice-wise classifier scores a slab
  of identical slices the same). The set publishes no patient ids: slices of one patient may be on both sides of any
  split, and the slices of a patient are not independent (the intervals are too narrow by an unknown factor).
  The service's lesion volume needs pixel size, so slices get a lesion area share, not mL.
* covid-ct-md — 3 whole volumes (P002 COVID-19, cap002 community-acquired pneumonia, normal002 normal), JPEG
  Lossless DICOM, decompressed with DCMTK dcmdjpeg into a temporary folder and run through `ctgate analyze` (the
  service's own pipeline and ONNX models, onnxruntime-node): verdict, category, probability, lesion mL.

Models: the PyTorch checkpoints in models/training/checkpoints, checked first to be the shipped ONNX weights: they
must reproduce the ONNX parity fixtures (models/parity, written by export.py from the weights in the .onnx files and
checked against onnxruntime by check-onnx.mjs) to 1e-4.

95 % CIs: Wilson score intervals for proportions; percentile bootstrap (2,000 resamples, seed 17, stratified by
class) for the AUC.
"""
import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
import real_data as R  # noqa: E402
from common import roc_points, sens_spec  # noqa: E402
from nets import load_slice_nets  # noqa: E402
from train_real import CLS_HW, predict_slices, resize2  # noqa: E402

SLICES = os.path.join(R.DATA, 'sars-cov-2-ct-slices')
CTMD = os.path.join(R.DATA, 'covid-ct-md')
VOLUMES = (('covid/P002', 1, 'COVID-19 (RT-PCR)'), ('cap/cap002', 0, 'community-acquired pneumonia'), ('normal/normal002', 0, 'normal chest'))


def wilson(k, n, z=1.96):
    if n == 0:
        return [None, None]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def auc_ci(labels, scores, n=2000, seed=17):
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    pos, neg = np.nonzero(labels == 1)[0], np.nonzero(labels == 0)[0]
    if len(pos) == 0 or len(neg) == 0:
        return None, [None, None]
    rng = np.random.RandomState(seed)
    _, auc = roc_points(labels, scores)
    boots = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        boots.append(roc_points(labels[idx], scores[idx])[1])
    return float(auc), [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def check_parity(models_dir, seg, cls):
    """The checkpoints are the shipped ONNX weights: they reproduce the parity fixtures export.py wrote."""
    p = json.load(open(os.path.join(models_dir, 'parity', 'parity.json')))
    worst = 0.0
    for key, net in (('lesion', seg), ('classifier', cls)):
        f = p[key]
        x = np.fromfile(os.path.join(models_dir, 'parity', f['input']), dtype='<f4').reshape(f['inputShape'])
        want = np.fromfile(os.path.join(models_dir, 'parity', f['expected']), dtype='<f4').reshape(f['expectedShape'])
        with torch.no_grad():
            got = net(torch.from_numpy(x))
        got = (got[0] if isinstance(got, (tuple, list)) else got).numpy()
        if key == 'lesion' and got.shape != want.shape:
            got = got[:, :1]
        worst = max(worst, float(np.abs(got.reshape(want.shape) - want).max()))
    if worst > 1e-4:
        raise SystemExit(f'the checkpoints are not the shipped ONNX weights: max difference {worst:.2e} on the parity fixtures')
    return worst


@torch.no_grad()
def score_slices(seg, cls, paths):
    """Each JPEG as the service would see it: HU calibration, 1 mm grid, lung box crop, lesion model, classifier."""
    cts, shares, failed = [], [], []
    for path in paths:
        im = R.read_gray(path)
        slope, icpt, _ = R.calibration([im])
        hu = R.to_grid(im.astype(np.float32) * slope + icpt)
        bb = R.lung_bbox(hu)
        if bb is None:
            failed.append(path)
            y0, y1, x0, x1 = 0, hu.shape[0], 0, hu.shape[1]
        else:
            y0, y1, x0, x1 = bb
        ct = R.window01(hu)[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5]
        cts.append(ct)
    probs = []
    out = predict_slices(seg, cts)
    for ct, p in zip(cts, out):
        mask = p[0] >= 0.5
        shares.append(float(mask.mean()))
        x = torch.from_numpy(np.stack([resize2(ct), resize2(mask.astype(np.float32))]))[None, :, None]
        probs.append(float(cls(x)[0, 0]))
    return probs, shares, failed


def block(labels, scores, threshold):
    at = sens_spec(labels, scores, threshold)
    P = int(sum(labels))
    N = len(labels) - P
    auc, ci = auc_ci(labels, scores)
    return {'cases': len(labels), 'positives': P, 'negatives': N, **at, 'sensitivityCi95': wilson(at['tp'], P), 'specificityCi95': wilson(at['tn'], N),
            'auc': auc, 'aucCi95': ci}


def run_volumes(models_dir, threshold):
    rows = []
    tmp = tempfile.mkdtemp(prefix='ctgate-ctmd-')
    try:
        for rel, label, what in VOLUMES:
            name = os.path.basename(rel)
            src = os.path.join(CTMD, rel)
            dec = os.path.join(tmp, name)
            os.makedirs(dec)
            for f in sorted(os.listdir(src)):
                subprocess.run(['dcmdjpeg', os.path.join(src, f), os.path.join(dec, f)], check=True)
            out = os.path.join(tmp, 'out-' + name)
            subprocess.run(['node', os.path.join(ROOT, 'bin', 'ctgate.mjs'), 'analyze', dec, '--out', out, '--threads', '2',
                            '--manifest', os.path.join(models_dir, 'manifest.json')], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            f = json.load(open(os.path.join(out, 'findings.json')))
            rows.append({'id': name, 'truth': what, 'label': label, 'verdict': f['verdict'], 'category': f.get('category'), 'prob': f['probability'],
                         'lesionVolumeMl': f['lesionVolumeMl'], 'lungInvolvementPercent': (f.get('lungInvolvementPercent') or {}).get('total'),
                         'lesionCount': f['lesionCount']})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', default=os.path.join(ROOT, 'models'))
    ap.add_argument('--checkpoints', default=None)
    ap.add_argument('--out', default=os.path.join(HERE, 'work', 'evaluate-sources.json'))
    ap.add_argument('--no-volumes', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(2)
    models_dir = os.path.abspath(args.models)
    seg, cls = load_slice_nets(args.checkpoints or os.path.join(models_dir, 'training', 'checkpoints'))
    seg.eval()
    cls.eval()
    parity = check_parity(models_dir, seg, cls)
    manifest = json.load(open(os.path.join(models_dir, 'manifest.json')))
    cls_m = next(m for m in manifest['models'] if m['name'] == 'covid-resnet')
    threshold = cls_m['threshold']

    paths, labels = [], []
    for sub, label in (('COVID', 1), ('non-COVID', 0)):
        d = os.path.join(SLICES, sub)
        names = sorted(os.listdir(d), key=R._num)
        paths += [os.path.join(d, n) for n in names]
        labels += [label] * len(names)
    probs, shares, failed = score_slices(seg, cls, paths)
    slice_rows = [{'id': os.path.relpath(p, SLICES), 'label': l, 'prob': s, 'lesionShare': sh} for p, l, s, sh in zip(paths, labels, probs, shares)]
    slices = block(labels, probs, threshold)
    neg_shares = np.array([r['lesionShare'] for r in slice_rows if r['label'] == 0])
    pos_shares = np.array([r['lesionShare'] for r in slice_rows if r['label'] == 1])
    slices['lesionShareMedian'] = {'covid': float(np.median(pos_shares)), 'nonCovid': float(np.median(neg_shares))}
    slices['lesionAnyShare'] = {'covid': float((pos_shares > 0).mean()), 'nonCovid': float((neg_shares > 0).mean())}
    slices['lungBoxNotFound'] = len(failed)

    result = {'date': datetime.date.today().isoformat(), 'threshold': threshold, 'minOpacityMl': cls_m.get('minOpacityMl'),
              'classifierSha256': cls_m['sha256'], 'parityMaxDiff': parity, 'sarsCov2CtSlices': slices}
    if not args.no_volumes:
        vols = run_volumes(models_dir, threshold)
        result['covidCtMd'] = {'volumes': vols}
        for cls_name, lab in (('covid', 1), ('nonCovid', 0)):
            rs = [v for v in vols if v['label'] == lab]
            k = sum(1 for v in rs if (v['verdict'] == 'positive') == (lab == 1))
            result['covidCtMd'][cls_name] = {'n': len(rs), 'correct': k, 'ci95': wilson(k, len(rs))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump({**result, 'slices': slice_rows}, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
