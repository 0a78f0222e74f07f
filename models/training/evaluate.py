"""Evaluates ctgate's reference models and writes models/MODEL_CARD.md, models/roc.png, models/roc.csv and the test
metrics in models/manifest.json.

  nice -n 19 /usr/bin/python3 models/training/evaluate.py --data DATA [--models models] [--imgread BIN]
         [--slices ../shared/data/covid-slices-train]

Uses the PyTorch checkpoints models/training/checkpoints/{seg,cls}.pt that export.py saved beside the ONNX files
(it first checks them against the parity fixtures, so they are the weights in the ONNX files).

1. Held-out synthetic test split (DATA/test): lesion Dice (threshold 0.5) per study and kind; the deployed
   pipeline's classification (lesion channel = the lesion model's own mask) → ROC, AUC, sensitivity/specificity
   at the manifest's operating threshold, positive rate per kind.
2. Real COVID-19 slices (Inf-Net "Doctor-label" set, non-commercial licence, evaluation only): each 8-bit
   lung-window JPEG is mapped back to HU assuming window W1500/L-600 (HU = -1350 + 1500·v/255), then to the
   [-1024, 350] window; rotated back so anterior is up; resized from an assumed 350 mm / 512 px field of view
   (0.684 mm pixels) to 1 mm pixels; replicated along z to the model's minimum depth (8 slices); padded to
   multiples of 8 with 0; the middle slice's probability is resized back to the image and thresholded at 0.5.
   Dice against the doctors' masks per slice (mean, median) and pooled over all slices. The same with an
   assumed W1200/L-600 window, to show how much the unknown window matters.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (LESION_THRESHOLD, SEG_PATCH, WINDOW, arrays, classifier_input, dice, load_split, roc_points,  # noqa: E402
                    segment_volume, sens_spec)
from nets import load_nets  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, flush=True)


def load_models(ckpt_dir, models_dir):
    seg, cls = load_nets(ckpt_dir)
    # The checkpoints must be the weights in the ONNX files: compare with the parity fixtures export.py wrote.
    pdir = os.path.join(models_dir, 'parity')
    with open(os.path.join(pdir, 'parity.json')) as f:
        par = json.load(f)
    with torch.no_grad():
        for key, model in (('lesion', seg), ('classifier', cls)):
            x = np.fromfile(os.path.join(pdir, par[key]['input']), dtype='<f4').reshape(par[key]['inputShape'])
            want = np.fromfile(os.path.join(pdir, par[key]['expected']), dtype='<f4').reshape(par[key]['expectedShape'])
            got = model(torch.from_numpy(x)).numpy()
            if np.max(np.abs(got - want)) > 1e-4:
                raise SystemExit(f'checkpoint does not match parity fixture {key}: re-run export.py')
    return seg, cls


@torch.no_grad()
def evaluate_synthetic(seg, cls, items, threshold):
    rows = []
    for it in items:
        t0 = time.time()
        ct, lung, lesion = arrays(it)
        ct = np.asarray(ct)
        lesion = np.asarray(lesion)
        prob = segment_volume(seg, ct)
        pred = prob >= LESION_THRESHOLD
        d = dice(pred, lesion)
        # Both inputs in one batch of 2 (PyTorch's CPU conv is much faster with a batch > 1).
        both = cls(torch.cat([classifier_input(ct, pred.astype(np.float32)), classifier_input(ct, lesion)]))
        p_pred, p_gt = float(both[0, 0]), float(both[1, 0])
        fp_vox = int(np.sum(pred & (lesion == 0)))
        rows.append({'id': it['id'], 'kind': it['kind'], 'label': it['label'], 'lesionVoxels': it['lesionVoxels'],
                     'predLesionVoxels': int(pred.sum()), 'falsePositiveVoxels': fp_vox, 'dice': d,
                     'prob': p_pred, 'probTruthMask': p_gt, 'positive': p_pred >= threshold})
        log(f"test {it['id']} {it['kind']:15s} dice {'-' if d is None else f'{d:.3f}'} prob {p_pred:.3f} "
            f"(truth mask {p_gt:.3f}) {time.time() - t0:.0f} s")
    return rows


def summarise_synthetic(rows, threshold):
    labels = [r['label'] for r in rows]
    scores = [r['prob'] for r in rows]
    pts, auc = roc_points(labels, scores)
    _, auc_gt = roc_points(labels, [r['probTruthMask'] for r in rows])
    with_lesion = [r for r in rows if r['lesionVoxels'] > 0 and r['dice'] is not None]
    kinds = sorted({r['kind'] for r in rows})
    by_kind = {}
    for k in kinds:
        rk = [r for r in rows if r['kind'] == k]
        dk = [r['dice'] for r in rk if r['lesionVoxels'] > 0 and r['dice'] is not None]
        by_kind[k] = {'studies': len(rk), 'calledPositive': int(sum(r['positive'] for r in rk)),
                      'lesionDiceMean': float(np.mean(dk)) if dk else None,
                      'meanFalsePositiveMl': float(np.mean([r['falsePositiveVoxels'] for r in rk]) * 2.5 / 1000)}
    pooled_inter = sum(r['dice'] * (r['lesionVoxels'] + r['predLesionVoxels']) / 2 for r in with_lesion)
    pooled_sum = sum((r['lesionVoxels'] + r['predLesionVoxels']) for r in with_lesion)
    return {
        'cases': len(rows), 'positives': int(sum(labels)),
        'auc': auc, 'aucWithTruthMask': auc_gt, 'threshold': threshold,
        'atThreshold': sens_spec(labels, scores, threshold),
        'lesionDiceMean': float(np.mean([r['dice'] for r in with_lesion])) if with_lesion else None,
        'lesionDicePooled': float(2 * pooled_inter / pooled_sum) if pooled_sum else None,
        'byKind': by_kind, 'roc': [[round(f, 4), round(t, 4), (None if s == float('inf') else round(s, 5))] for f, t, s in pts],
    }


def read_pgm(path, imgread):
    """Decodes a JPEG/PNG with the imgread helper; returns a (rows, cols) uint8 array."""
    raw = subprocess.run([imgread, path], check=True, capture_output=True).stdout
    # Header: P5, width, height, maxval separated by single whitespace; one whitespace byte before the pixels.
    fields, pos = [], 0
    while len(fields) < 4:
        end = pos
        while raw[end:end + 1] not in (b' ', b'\n', b'\t', b'\r'):
            end += 1
        fields.append(raw[pos:end])
        pos = end + 1
    assert fields[0] == b'P5' and int(fields[3]) == 255, path
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(raw[pos:pos + w * h], dtype=np.uint8).reshape(h, w)


@torch.no_grad()
def evaluate_real(seg, slices_dir, imgread, windows=((1500, -600), (1200, -600)), depth=8, fov_mm=350.0, matrix=512, batch=5):
    imgs = sorted(os.listdir(os.path.join(slices_dir, 'Imgs')), key=lambda n: int(os.path.splitext(n)[0]))
    px_mm = fov_mm / matrix
    raw = []
    for name in imgs:
        stem = os.path.splitext(name)[0]
        img = read_pgm(os.path.join(slices_dir, 'Imgs', name), imgread).astype(np.float32)
        gt = read_pgm(os.path.join(slices_dir, 'GT', stem + '.png'), imgread) > 127
        raw.append((name, img, gt))
    out = {}
    for ww, wl in windows:
        t0 = time.time()
        inputs = []
        for name, img, gt in raw:
            # Rotate back: the slices have anterior at the image's left; the model was trained with anterior up.
            img_r = np.rot90(img, k=-1).copy()
            hu = (wl - ww / 2) + img_r / 255.0 * ww
            x = np.clip((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1).astype(np.float32)
            H0, W0 = x.shape
            H1, W1 = int(round(H0 * px_mm)), int(round(W0 * px_mm))
            t = F.interpolate(torch.from_numpy(x)[None, None], size=(H1, W1), mode='bilinear', align_corners=False)[0, 0]
            inputs.append(t)
        # One canvas (multiples of 8, padded with 0) so slices run in batches (PyTorch's fast CPU conv path).
        Hc = int(np.ceil(max(t.shape[0] for t in inputs) / 8) * 8)
        Wc = int(np.ceil(max(t.shape[1] for t in inputs) / 8) * 8)
        probs = []
        for b in range(0, len(inputs), batch):
            chunk = inputs[b:b + batch]
            vol = torch.zeros(len(chunk), 1, depth, Hc, Wc)
            for q, t in enumerate(chunk):
                vol[q, 0, :, :t.shape[0], :t.shape[1]] = t        # the slice replicated along z
            p = seg(vol)[:, 0, depth // 2]
            probs += [p[q, :t.shape[0], :t.shape[1]] for q, t in enumerate(chunk)]
        per = []
        inter = total = 0
        for (name, img, gt), prob in zip(raw, probs):
            H0, W0 = gt.shape[1], gt.shape[0]                         # rotated frame: (cols, rows) of the original
            prob0 = F.interpolate(prob[None, None], size=(H0, W0), mode='bilinear', align_corners=False)[0, 0].numpy()
            pred = np.rot90(prob0 >= LESION_THRESHOLD, k=1)
            d = dice(pred, gt)
            per.append({'slice': name, 'dice': d, 'gtPixels': int(gt.sum()), 'predPixels': int(pred.sum())})
            inter += int(np.logical_and(pred, gt).sum())
            total += int(pred.sum() + gt.sum())
        ds = [p['dice'] for p in per if p['dice'] is not None]
        key = f'W{ww}/L{wl}'
        out[key] = {'slices': len(per), 'diceMean': float(np.mean(ds)), 'diceMedian': float(np.median(ds)),
                    'dicePooled': 2 * inter / max(total, 1), 'slicesWithDiceOver0_5': int(sum(d > 0.5 for d in ds)),
                    'predictedPixelsTotal': int(sum(p['predPixels'] for p in per)),
                    'truthPixelsTotal': int(sum(p['gtPixels'] for p in per)), 'seconds': time.time() - t0, 'perSlice': per}
        log(f"real slices {key}: Dice mean {out[key]['diceMean']:.3f} median {out[key]['diceMedian']:.3f} "
            f"pooled {out[key]['dicePooled']:.3f} ({time.time() - t0:.0f} s)")
    return out


def write_roc(models_dir, roc, auc, threshold, at):
    """roc.csv (the points) and roc.png (the plot, matplotlib's Agg backend: Debian python3-matplotlib)."""
    with open(os.path.join(models_dir, 'roc.csv'), 'w') as f:
        f.write('false_positive_rate,true_positive_rate,threshold\n')
        for fpr, tpr, s in roc:
            f.write(f"{fpr},{tpr},{'' if s is None else s}\n")
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fpr = [p[0] for p in roc] + [1.0]
    tpr = [p[1] for p in roc] + [1.0]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle='--', color='#bbbbbb', linewidth=1)
    ax.step(fpr, tpr, where='post', color='#c0392b', linewidth=2, label=f'covid-resnet (AUC {auc:.3f})')
    op = (1 - at['specificity'], at['sensitivity'])
    ax.plot(*op, 'o', color='#2c3e50')
    ax.annotate(f'threshold {threshold}', op, textcoords='offset points', xytext=(8, -14), fontsize=9)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('1 - specificity')
    ax.set_ylabel('sensitivity')
    ax.set_title('Synthetic held-out test split', fontsize=11)
    ax.legend(loc='lower right', fontsize=9)
    fig.text(0.5, 0.005, 'NOT FOR CLINICAL USE - synthetic phantoms only', ha='center', fontsize=7, color='#666666')
    fig.tight_layout()
    fig.savefig(os.path.join(models_dir, 'roc.png'))
    plt.close(fig)


def fmt(v, n=3):
    return '–' if v is None else (f'{v:.{n}f}' if isinstance(v, float) else str(v))


def write_card(models_dir, manifest, summ, test, real, real_note):
    seg_m = next(m for m in manifest['models'] if m['name'] == 'lesion-unetpp')
    cls_m = next(m for m in manifest['models'] if m['name'] == 'covid-resnet')
    val = summ['validation']
    st = summ['settings']
    at = test['atThreshold']
    lines = []
    w = lines.append
    w('# ctgate reference models — model card')
    w('')
    w('> **NOT FOR CLINICAL USE.** These models were trained only on synthetic phantoms that the project generates '
      '(`src/synthetic/phantom.ts`). They are not a medical device, have not been validated on patients, and must not '
      'inform any diagnosis or treatment. They exist so that ctgate (HL7 → PACS → models → SEG/FHIR/ORU) can be built, '
      'tested and demonstrated end to end with real ONNX files that follow the paper\'s pipeline.')
    w('')
    w(f'Generated by `models/training/evaluate.py` on {datetime.date.today().isoformat()}. Rerun: `models/training/retrain.sh` '
      '(dataset → train → export → evaluate) or `models/training/evaluate.sh` (evaluation only).')
    w('')
    w('## Models')
    w('')
    w('| name | file | task | params | ONNX bytes | input | output | threshold |')
    w('|---|---|---|---|---|---|---|---|')
    w(f"| lesion-unetpp {seg_m['version']} | `{seg_m['file']}` | lesion segmentation (any lesion) | {seg_m['architecture']['params']:,} | "
      f"{seg_m['bytes']:,} | `ct` [1,1,D,H,W], D/H/W multiples of 8 | `lesion_prob` [1,1,D,H,W] | {seg_m['threshold']} |")
    w(f"| covid-resnet {cls_m['version']} | `{cls_m['file']}` | COVID-19-like vs not | {cls_m['architecture']['params']:,} | "
      f"{cls_m['bytes']:,} | `ct_mask` [1,2,32,96,96] | `prob` [1,1] | {cls_m['threshold']} |")
    w('| lung-threshold | (Node code) | lung segmentation, classical | – | – | window [-150, 350] | lung mask | – |')
    w('')
    w('Pipeline (DESIGN.md, "The paper\'s pipeline"): resample to (1, 1, 2.5) mm (x, y, z), trilinear; crop to the lung '
      'bounding box + 5 voxels in x/y and 2 slices in z (not masked); HU window [-1024, 350] → [0, 1].')
    w('')
    w('- **lesion-unetpp**: 3D U-Net++: a 3×3×3 stem conv with stride (1, 2, 2) (z, y, x), then levels X^{0..2,0} with '
      'two 2×2×2 max-poolings (channels 8/16/32) — three in-plane and two z downsamplings in all (total stride z 4, '
      'y/x 8); nested dense skip pathways X^{i,j} (each nested node: 1×1×1 bottleneck of the concatenation '
      '[X^{i,0..j-1}, Up(X^{i+1,j-1})], then two 3×3×3 conv–BN–ReLU); nearest upsampling. Heads: deep supervision on '
      'X^{0,1} and X^{0,2} (training only) and a final full-resolution head (X^{0,2} upsampled, concatenated with the '
      'input CT, one 3×3×3 conv); **inference uses only the final head**, through a sigmoid. The stride-2 stem is a '
      'CPU-budget choice (≈3× cheaper training, ≈5× cheaper inference than a full-resolution level 0). Fully '
      'convolutional: any input whose z, y, x are multiples of 8 (pad with 0). Sliding window as the manifest says '
      '(tile 128×224×288, overlap 8×16×16: a typical lung crop is one tile; training used 32×96×96 patches) or the whole '
      'crop at once; the evaluation below ran whole crops.')
    w('- **covid-resnet**: 3D ResNet with basic blocks [1, 1, 1, 1], widths 8/16/32/64, stem 3×3×3 stride (1,2,2), global '
      'average and global max pooling concatenated (so a small finding is not averaged away), dropout 0.2, one logit → '
      'sigmoid (in the ONNX graph). Input: the whole lung crop resized to 32×96×96 (z, y, x), '
      'trilinear with aligned corners, channel 1 = CT, channel 2 = the lesion model\'s mask at 0.5 (interpolated, in [0, 1]).')
    w('')
    w('## Training data')
    w('')
    d = summ['data']
    w(f"Synthetic phantoms only (`models/training/make-dataset.ts`), generator size 160×160×(56–64) at 2.0–2.4 mm in-plane "
      f"(field of view 320–384 mm) and 5 mm slices, noise σ 10–25 HU. Splits use different seeds (train 1, validation 2, "
      f"test 3), so no phantom patient is shared.")
    w('')
    w('| split | studies | kinds |')
    w('|---|---|---|')
    w(f"| train | {d['train']['studies']} | {', '.join(f'{k} {v}' for k, v in sorted(d['train']['kinds'].items()))} |")
    w(f"| validation | {d['val']['studies']} | {', '.join(f'{k} {v}' for k, v in sorted(d['val']['kinds'].items()))} |")
    tk = {}
    for r in test['_rows']:
        tk[r['kind']] = tk.get(r['kind'], 0) + 1
    w(f"| test | {test['cases']} | {', '.join(f'{k} {v}' for k, v in sorted(tk.items()))} |")
    w('')
    w('Positive = `covid` (bilateral peripheral ground-glass opacities, crazy paving, consolidation); negative = '
      '`lobar-pneumonia`, `nodule`, `old-lesion`, `healthy`. Lesion ground truth = every lesion of any kind.')
    w('')
    w('## Training settings')
    w('')
    w(f"- Optimiser Adam, weight decay 5e-4 (the paper's), **learning rate {st['lr']:g}** with cosine decay to 1 % — the paper's "
      f"1e-4 does not converge in this CPU budget (2 shared cores).")
    w(f"- Lesion model: {st['seg']['iterations']} iterations × batch {st['seg']['batch']} random patches {tuple(st['seg']['patch'])} "
      f"(z, y, x); {st['seg']['sampling']}; augmentation {st['seg']['augmentation']}; loss {st['seg']['loss']}.")
    w(f"- Classifier: {st['cls']['epochs']} epochs × batch {st['cls']['batch']}; channel 2 = {st['cls']['channel2']}; "
      f"augmentation {st['cls']['augmentation']}; BCE loss.")
    sec = summ['seconds']
    w(f"- Wall time on this machine (2 shared cores, nice 19, other jobs running): lesion model {sec['seg'] / 60:.1f} min, "
      f"classifier {sec['cls'] / 60:.1f} min, validation calibration {sec['calibration'] / 60:.1f} min"
      + (f"; train.py CPU time {sec['cpuTotal'] / 60:.1f} min" if 'cpuTotal' in sec else '') + f". PyTorch {st['torch']}.")
    w(f"- Operating threshold **{cls_m['threshold']}**: {cls_m['thresholdRule']}. On validation ({val['cases']} studies, "
      f"{val['positives']} positive): sensitivity {fmt(val['atThreshold']['sensitivity'])}, specificity "
      f"{fmt(val['atThreshold']['specificity'])}, AUC {fmt(val['auc'])}.")
    w('')
    w('## Results on held-out synthetic test studies')
    w('')
    w(f"Test split: {test['cases']} studies ({test['positives']} positive), run as deployed (the classifier sees the lesion "
      f"model's own mask).")
    w('')
    w(f"- **Classification: AUC {fmt(test['auc'])}; at threshold {cls_m['threshold']}: sensitivity {fmt(at['sensitivity'])} "
      f"({at['tp']}/{at['tp'] + at['fn']}), specificity {fmt(at['specificity'])} ({at['tn']}/{at['tn'] + at['fp']}).** "
      f"With the ground-truth lesion mask instead of the predicted one: AUC {fmt(test['aucWithTruthMask'])}. "
      f"ROC: `roc.png` and the points in `roc.csv`.")
    w(f"- **Lesion Dice** (threshold 0.5, studies with lesions): mean {fmt(test['lesionDiceMean'])}, pooled over voxels "
      f"{fmt(test['lesionDicePooled'])}.")
    w('')
    w('| kind | studies | called positive | lesion Dice (mean) | false-positive lesion volume per study (mL) |')
    w('|---|---|---|---|---|')
    for k, v in test['byKind'].items():
        w(f"| {k} | {v['studies']} | {v['calledPositive']} | {fmt(v['lesionDiceMean'])} | {v['meanFalsePositiveMl']:.1f} |")
    w('')
    w('For comparison, the paper reports sensitivity 0.974, specificity 0.922, AUC 0.991 on 282 real test cases and '
      'lesion Dice 0.754. The synthetic numbers above are **not** comparable: the phantoms are far simpler than patients.')
    w('')
    w('## Lesion Dice on real COVID-19 slices')
    w('')
    if real is None:
        w(f'Not run: {real_note}')
    else:
        w('`../shared/data/covid-slices-train`: 50 axial slices with doctors\' infection masks (Inf-Net "Doctor-label" set, '
          'from the MedSeg COVID-19 CT segmentation dataset; **non-commercial research use only** — used here for evaluation '
          'only, never for training). They are 8-bit JPEGs already in a lung window, with no HU or pixel spacing, so the '
          'mapping is a guess: value v → HU = (L − W/2) + v·W/255 with an assumed lung window, then the model\'s '
          '[-1024, 350] window; rotated 90° back (anterior up); resized from an assumed 350 mm field of view on a 512 matrix '
          '(0.684 mm pixels) to 1 mm; the slice replicated 8 times along z (the model\'s minimum depth), the middle slice\'s '
          'probability resized back and thresholded at 0.5; JPEGs read with `imgread.c` (libjpeg/libpng).')
        w('')
        w('| assumed window | slices | Dice mean | Dice median | Dice pooled | slices with Dice > 0.5 | predicted / true lesion pixels |')
        w('|---|---|---|---|---|---|---|')
        for k, v in real.items():
            w(f"| {k} | {v['slices']} | {v['diceMean']:.3f} | {v['diceMedian']:.3f} | {v['dicePooled']:.3f} | "
              f"{v['slicesWithDiceOver0_5']} | {v['predictedPixelsTotal']:,} / {v['truthPixelsTotal']:,} |")
        w('')
        w('This is the honest measure of how far the synthetic training transfers to patients: a model trained on phantoms '
          'sees a 2-D slice stacked into a fake 3-D volume, with guessed HU and spacing. Treat it as a smoke test of the '
          'plumbing on real anatomy, not as performance.')
    w('')
    w('## Known limits')
    w('')
    weak = [k for k, v in test['byKind'].items() if v['lesionDiceMean'] is not None and v['lesionDiceMean'] < 0.3]
    if weak:
        w(f"- **The lesion model misses most lesions of kind {', '.join(weak)}** on the synthetic test split (Dice < 0.3): "
          'it has learnt ground-glass opacities far better than solid lesions (consolidation, nodules, calcifications), '
          'which need more context and more training than this CPU budget gave. A DICOM SEG from it under-marks those '
          'lesions; the classifier still sees them in its CT channel.')
    w('- Synthetic training data only: simple geometric anatomy (ellipsoid lungs, tube vessels, no fissures or heart '
      'motion), idealised lesions of five kinds, Gaussian noise; no scanner, reconstruction-kernel, contrast, dose or '
      'patient variety. Real-image performance is unknown and probably poor (see the real-slice Dice above).')
    w('- The paper\'s known misses apply and are likely worse here: ground-glass patches < 1 cm; confusion with other '
      'viral or lobar pneumonia; mixed lesion types; metal or motion artefacts (none of which the phantoms contain).')
    w('- "COVID-19-like" means "looks like the generator\'s covid kind"; other viral pneumonias are absent from training.')
    w('- Small networks (lesion model ≈80 k, classifier ≈225 k parameters) trained for minutes on 2 CPU cores; metrics come from few cases '
      '(wide confidence intervals).')
    w('- Physicians must always see the highlighted regions, positive or negative (as in the paper\'s deployment).')
    w('')
    w('## Reproduce')
    w('')
    w('```')
    w('models/training/retrain.sh      # dataset -> train -> export -> evaluate (overwrites models/*.onnx, manifest, card)')
    w('models/training/evaluate.sh     # evaluation only, with the committed checkpoints')
    w('node models/training/check-onnx.mjs   # ONNX (onnxruntime-node) vs PyTorch parity on models/parity/*')
    w('```')
    w('')
    with open(os.path.join(models_dir, 'MODEL_CARD.md'), 'w') as f:
        f.write('\n'.join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True)
    ap.add_argument('--models', default=os.path.abspath(os.path.join(HERE, '..')))
    ap.add_argument('--checkpoints', default=None, help='default: MODELS/training/checkpoints')
    ap.add_argument('--imgread', default=None)
    ap.add_argument('--slices', default=os.path.abspath(os.path.join(HERE, '..', '..', '..', 'shared', 'data', 'covid-slices-train')))
    ap.add_argument('--limit', type=int, default=0, help='evaluate only the first N test studies (0 = all)')
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_all = time.time()
    if args.checkpoints is None:
        args.checkpoints = os.path.join(args.models, 'training', 'checkpoints')
    seg, cls = load_models(args.checkpoints, args.models)
    mpath = os.path.join(args.models, 'manifest.json')
    with open(mpath) as f:
        manifest = json.load(f)
    with open(os.path.join(args.checkpoints, 'train-summary.json')) as f:
        summ = json.load(f)
    cls_m = next(m for m in manifest['models'] if m['name'] == 'covid-resnet')
    seg_m = next(m for m in manifest['models'] if m['name'] == 'lesion-unetpp')
    threshold = cls_m['threshold']
    items = load_split(os.path.join(args.data, 'test'))
    if args.limit:
        items = items[:args.limit]
    t0 = time.time()
    rows = evaluate_synthetic(seg, cls, items, threshold)
    test = summarise_synthetic(rows, threshold)
    test['seconds'] = time.time() - t0
    test['_rows'] = rows
    log(f"test: AUC {test['auc']:.3f}, at {threshold}: {test['atThreshold']}, lesion Dice {test['lesionDiceMean']}")

    real, real_note = None, ''
    if not os.path.isdir(args.slices):
        real_note = f'{args.slices} not found.'
    else:
        imgread = args.imgread
        if imgread is None:
            imgread = os.path.join(HERE, 'bin', 'imgread')
            os.makedirs(os.path.dirname(imgread), exist_ok=True)
            r = subprocess.run(['gcc', '-O2', '-o', imgread, os.path.join(HERE, 'imgread.c'), '-ljpeg', '-lpng'], capture_output=True)
            if r.returncode != 0:
                imgread = None
                real_note = 'could not build imgread.c (needs gcc, libjpeg and libpng headers): ' + r.stderr.decode()[-300:]
        if imgread:
            real = evaluate_real(seg, args.slices, imgread)

    write_roc(args.models, test['roc'], test['auc'], threshold, test['atThreshold'])
    test_metrics_cls = {k: test[k] for k in ('cases', 'positives', 'auc', 'aucWithTruthMask', 'threshold', 'atThreshold')}
    test_metrics_cls['calledPositiveByKind'] = {k: f"{v['calledPositive']}/{v['studies']}" for k, v in test['byKind'].items()}
    test_metrics_cls['note'] = 'held-out synthetic test split, lesion channel = the lesion model\'s mask at 0.5'
    cls_m['metrics']['test'] = test_metrics_cls
    seg_test = {'cases': sum(1 for r in rows if r['lesionVoxels'] > 0), 'lesionDiceMean': test['lesionDiceMean'],
                'lesionDicePooled': test['lesionDicePooled'],
                'lesionDiceByKind': {k: v['lesionDiceMean'] for k, v in test['byKind'].items() if v['lesionDiceMean'] is not None},
                'note': 'held-out synthetic test split, whole crops, threshold 0.5'}
    if real is not None:
        seg_test['realCovidSlices'] = {k: {kk: v[kk] for kk in ('slices', 'diceMean', 'diceMedian', 'dicePooled')} for k, v in real.items()}
        seg_test['realCovidSlices']['note'] = ('Inf-Net Doctor-label 2-D slices (non-commercial licence, evaluation only); 8-bit '
                                               'lung-window JPEGs mapped to HU with an assumed window, 1 mm pixels assuming a '
                                               '350 mm FOV, slice replicated to depth 8')
    seg_m['metrics']['test'] = seg_test
    with open(mpath, 'w') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    write_card(args.models, manifest, summ, test, real, real_note)
    report = {'test': {k: v for k, v in test.items() if k != '_rows'}, 'testCases': rows, 'realSlices': real,
              'seconds': time.time() - t_all, 'cpuSeconds': time.process_time()}
    with open(os.path.join(args.checkpoints, 'evaluation.json'), 'w') as f:
        json.dump(report, f, indent=1)
    log(f"wrote {os.path.join(args.models, 'MODEL_CARD.md')}, roc.png, roc.csv, manifest test metrics "
        f"({time.time() - t_all:.0f} s)")


if __name__ == '__main__':
    main()
