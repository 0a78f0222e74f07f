"""Per-source evaluation of the shipped models (issue 17: "a positive means some opacity"): sensitivity,
specificity and AUC with 95 % confidence intervals on real data from other sources than training, and the category
(covid-19-like / other-opacity / no-significant-opacity) the service gives.

  /usr/bin/python3 models/training/evaluate_sources.py [--models models] [--out FILE.json] [--no-volumes]
      [--baseline OLD.json] [--cross CROSS.json] [--card]        (the shipped models; --card rewrites the card section)
  /usr/bin/python3 models/training/evaluate_sources.py --checkpoints DIR --threshold T --no-parity --no-volumes --out F.json
      (a model that does not ship, e.g. the cross-source check: train_real.py --sars --cross-source)

Split: sars-cov-2-ct-slices is split by image (real_data.sars_split, 60/20/20); classifier 0.3 trains on the first
60 % and chooses its threshold on the next 20 %, so its figure is the TEST split (sarsCov2CtSlicesTest); the whole-set
figure is kept to compare with 0.2, which never saw the set. COVID-SemiSeg doctor-labelled test split (15 COVID-19
slices, mapped the same way): sensitivity, the cross-source figure.

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
        if os.path.relpath(path, R.DATA).startswith('covid-slices-train'):
            im = np.rot90(im, k=-1)  # the doctor-labelled slices are stored rotated: anterior up, as the service sees them
        ct, found = R.single_slice_input(np.ascontiguousarray(im))
        if not found:
            failed.append(path)
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
    ap.add_argument('--no-parity', action='store_true', help='checkpoints that do not ship (no ONNX to match)')
    ap.add_argument('--threshold', type=float, default=None, help='instead of the manifest threshold (with --no-parity)')
    ap.add_argument('--baseline', default=None, help='an earlier run of this script (the 0.2 models) for the card comparison')
    ap.add_argument('--cross', default=None, help='a run of this script on the cross-source model (train_real.py --cross-source)')
    ap.add_argument('--card', action='store_true', help='rewrite the per-source section of models/MODEL_CARD.md')
    args = ap.parse_args()
    torch.set_num_threads(2)
    models_dir = os.path.abspath(args.models)
    seg, cls = load_slice_nets(args.checkpoints or os.path.join(models_dir, 'training', 'checkpoints'))
    seg.eval()
    cls.eval()
    parity = None if args.no_parity else check_parity(models_dir, seg, cls)
    manifest = json.load(open(os.path.join(models_dir, 'manifest.json')))
    cls_m = next(m for m in manifest['models'] if m['name'] == 'covid-resnet')
    threshold = args.threshold if args.threshold is not None else cls_m['threshold']
    if args.no_parity:
        cls_m = {**cls_m, 'sha256': None, 'version': 'checkpoint ' + os.path.abspath(args.checkpoints or '')}

    split = R.sars_split()
    part_of = {rel: part for part, rows in split.items() for rel, _ in rows}
    paths, labels = [], []
    for sub, label in (('COVID', 1), ('non-COVID', 0)):
        d = os.path.join(SLICES, sub)
        names = sorted(os.listdir(d), key=R._num)
        paths += [os.path.join(d, n) for n in names]
        labels += [label] * len(names)
    probs, shares, failed = score_slices(seg, cls, paths)
    slice_rows = [{'id': os.path.relpath(p, SLICES), 'split': part_of[os.path.relpath(p, SLICES)], 'label': l, 'prob': s, 'lesionShare': sh}
                  for p, l, s, sh in zip(paths, labels, probs, shares)]
    # The figure that counts: the test split (never used for training or the threshold by classifier 0.3). The whole
    # set is kept for comparison with the 0.2 figures (0.3 was trained on 60 % of it and chose its threshold on 20 %).
    test_rows = [r for r in slice_rows if r['split'] == 'test']
    slices_test = block([r['label'] for r in test_rows], [r['prob'] for r in test_rows], threshold)
    slices = block(labels, probs, threshold)
    neg_shares = np.array([r['lesionShare'] for r in slice_rows if r['label'] == 0])
    pos_shares = np.array([r['lesionShare'] for r in slice_rows if r['label'] == 1])
    slices['lesionShareMedian'] = {'covid': float(np.median(pos_shares)), 'nonCovid': float(np.median(neg_shares))}
    slices['lesionAnyShare'] = {'covid': float((pos_shares > 0).mean()), 'nonCovid': float((neg_shares > 0).mean())}
    slices['lungBoxNotFound'] = len(failed)

    # COVID-SemiSeg doctor-labelled test split (15 COVID-19 slices, MedSeg), mapped like the slices above: the
    # cross-source figure (classifier 0.3 is trained with half its data from sars-cov-2-ct-slices).
    _, doc_test = R.doctor_split()
    doc_paths = [os.path.join(R.DATA, 'covid-slices-train', 'Imgs', n + '.jpg') for n in doc_test]
    dprobs, dshares, _ = score_slices(seg, cls, doc_paths)
    k = sum(p >= threshold for p in dprobs)
    semiseg = {'cases': len(dprobs), 'positives': len(dprobs), 'tp': int(k), 'sensitivity': k / len(dprobs), 'sensitivityCi95': wilson(int(k), len(dprobs)),
               'rows': [{'id': n, 'prob': p, 'lesionShare': sh} for n, p, sh in zip(doc_test, dprobs, dshares)]}

    result = {'date': datetime.date.today().isoformat(), 'threshold': threshold, 'minOpacityMl': cls_m.get('minOpacityMl'),
              'classifierSha256': cls_m['sha256'], 'classifierVersion': cls_m['version'], 'parityMaxDiff': parity,
              'sarsCov2CtSlicesTest': slices_test, 'sarsCov2CtSlices': slices, 'covidSemiSegDoctorTest': semiseg}
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
    result['_slices'] = slice_rows
    if args.card:
        write_card_section(os.path.join(models_dir, 'MODEL_CARD.md'), result,
                           json.load(open(args.baseline)) if args.baseline else None, json.load(open(args.cross)) if args.cross else None)


SOURCES_BEGIN = '<!-- per-source: written by models/training/evaluate_sources.py -->'
SOURCES_END = '<!-- /per-source -->'


def _ci(c):
    return '–' if not c or c[0] is None else f'{c[0]:.2f}–{c[1]:.2f}'


def _ss(b, what):
    if b is None:
        return '–'
    if what == 'sens':
        return f"{b['tp']}/{b['positives']} = **{b['sensitivity']:.3f}** ({_ci(b['sensitivityCi95'])})"
    if what == 'spec':
        return f"{b['tn']}/{b['negatives']} = **{b['specificity']:.3f}** ({_ci(b['specificityCi95'])})"
    return '–' if b.get('auc') is None else f"{b['auc']:.3f} ({_ci(b.get('aucCi95'))})"


def _oppo(slice_rows, threshold, split='test'):
    """Specificity on the non-COVID-19 test slices where the lesion model marks opacity (other lung disease or
    anything else opaque): the figure issue 17 is about."""
    rows = [r for r in slice_rows if r.get('split', split) == split and r['label'] == 0 and r['lesionShare'] > 0]
    k = sum(r['prob'] < threshold for r in rows)
    return k, len(rows)


def write_card_section(card, res, base, cross):
    split = R.sars_split()
    part_of = {rel: part for part, rows in split.items() for rel, _ in rows}
    L = [SOURCES_BEGIN, '## Per-source evaluation and result categories (issue 17)', '',
         f"> NOT FOR CLINICAL USE. Measured by `models/training/evaluate_sources.py` on {res['date']} with the shipped models "
         f"(classifier {res.get('classifierVersion')}, sha256 {str(res['classifierSha256'])[:12]}…, threshold {res['threshold']}; checkpoints checked "
         f"against the ONNX parity fixtures: max difference {res['parityMaxDiff']:.1e}). 95 % CIs: Wilson for proportions, stratified "
         'percentile bootstrap (2,000) for the AUC. covid-ct-md was never used for training or a threshold; the sars-cov-2-ct-slices '
         'TEST split was never used for either.', '',
         'Since issue 17 a result has a **category**: `covid-19-like` (lesion ≥ `minOpacityMl` and classifier ≥ threshold), `other-opacity` '
         '(lesion ≥ `minOpacityMl`, classifier below threshold: another pneumonia, mass, nodule, scarring… — coded SNOMED CT 301230006 '
         '|Lung finding|, never as COVID-19), `no-significant-opacity` (lesion < `minOpacityMl` = 0.5 mL, the volume of a 1 cm sphere, '
         'set a priori in `models/manifest.json`), or `not-assessable`.', '']
    ob = base or {}
    bt = ob.get('threshold')
    bname = f"{str(ob.get('classifierVersion', '0.2'))[:3]} (threshold {bt})" if base else 'earlier model (none given: --baseline)'
    L += [f"| source | n | measure | {bname} | {str(res.get('classifierVersion', 'new'))[:3]} (threshold {res['threshold']}) |", '|---|---|---|---|---|']
    # 0.2's test-split block from its per-slice rows
    old_test = None
    if base:
        rows = [r for r in base['slices'] if part_of.get(r['id']) == 'test']
        old_test = block([r['label'] for r in rows], [r['prob'] for r in rows], bt)
    t = res['sarsCov2CtSlicesTest']
    n = f"{t['positives']} + {t['negatives']}"
    L.append(f"| **sars-cov-2-ct-slices, test split** (by image) | {n} | sensitivity (COVID-19) | {_ss(old_test, 'sens')} | {_ss(t, 'sens')} |")
    L.append(f"| | | specificity (non-COVID-19) | {_ss(old_test, 'spec')} | {_ss(t, 'spec')} |")
    ko, no = _oppo(base['slices'], bt) if base else (None, None)
    for r in base['slices'] if base else []:
        r['split'] = part_of.get(r['id'])
    if base:
        ko, no = _oppo(base['slices'], bt)
    kn, nn = _oppo(res['_slices'], res['threshold'])
    L.append(f"| | | specificity on non-COVID-19 slices **with opacity** (lesion model marks any pixel) | "
             + (f"{ko}/{no} = **{ko / max(no, 1):.3f}** ({_ci(wilson(ko, no))})" if base else '–')
             + f" | {kn}/{nn} = **{kn / max(nn, 1):.3f}** ({_ci(wilson(kn, nn))}) |")
    L.append(f"| | | AUC | {_ss(old_test, 'auc')} | {_ss(t, 'auc')} |")
    a = res['sarsCov2CtSlices']
    ob_all = ob.get('sarsCov2CtSlices')
    L.append(f"| sars-cov-2-ct-slices, whole set (0.3 trained on 60 % of it: not a test figure for 0.3) | 600 + 600 | sensitivity / specificity / AUC | "
             + (f"{ob_all['sensitivity']:.3f} / {ob_all['specificity']:.3f} / {ob_all['auc']:.3f}" if ob_all else '–')
             + f" | {a['sensitivity']:.3f} / {a['specificity']:.3f} / {a['auc']:.3f} |")
    d = res['covidSemiSegDoctorTest']
    od = ob.get('covidSemiSegDoctorTest')
    L.append(f"| COVID-SemiSeg doctor-labelled test split (MedSeg; one-slice slabs, per-image calibration) | {d['cases']} + 0 | sensitivity | "
             + (f"{od['tp']}/{od['cases']} = **{od['sensitivity']:.3f}** ({_ci(od['sensitivityCi95'])})" if od else '–')
             + f" | {d['tp']}/{d['cases']} = **{d['sensitivity']:.3f}** ({_ci(d['sensitivityCi95'])}) |")
    old_vols = {v['id']: v for v in (ob.get('covidCtMd') or {}).get('volumes', [])}
    for v in (res.get('covidCtMd') or {}).get('volumes', []):
        o = old_vols.get(v['id'])
        fmt = lambda x: f"{x['verdict']}, **{x['category']}**, p {x['prob']:.3f}, lesion {x['lesionVolumeMl']:.1f} mL" if x else '–'  # noqa: E731
        L.append(f"| covid-ct-md {v['id']} (whole volume) | 1 | truth: {v['truth']} | {fmt(o)} | {fmt(v)} |")
    cm = res.get('covidCtMd')
    if cm:
        oc = ob.get('covidCtMd') or {}
        for key, what in (('covid', 'COVID-19 volumes called positive'), ('nonCovid', 'non-COVID volumes called negative')):
            o = oc.get(key)
            L.append(f"| covid-ct-md | {cm[key]['n']} | {what} | " + (f"{o['correct']}/{o['n']} ({_ci(o['ci95'])})" if o else '–')
                     + f" | {cm[key]['correct']}/{cm[key]['n']} ({_ci(cm[key]['ci95'])}) |")
    L.append('')
    if cross:
        ct, cd = cross['sarsCov2CtSlicesTest'], cross['covidSemiSegDoctorTest']
        L += ['**Cross-source check.** A second classifier trained the same way but with **no COVID-SemiSeg slice at all** '
              '(`train_real.py --sars --cross-source`: sars-cov-2-ct-slices training split + phantoms; threshold by the same rule on '
              f"the sars-cov-2-ct-slices validation split: {cross['threshold']}) and scored on the COVID-SemiSeg doctor test split, "
              f"a source it never saw: sensitivity {cd['tp']}/{cd['cases']} = **{cd['sensitivity']:.3f}** ({_ci(cd['sensitivityCi95'])}); on "
              f"the sars-cov-2-ct-slices test split it gives sensitivity {ct['sensitivity']:.3f} ({_ci(ct['sensitivityCi95'])}), specificity "
              f"{ct['specificity']:.3f} ({_ci(ct['specificityCi95'])}), AUC {ct['auc']:.3f} ({_ci(ct['aucCi95'])}). This model does not ship.", '']
    L += ['How to read this:', '',
          '- sars-cov-2-ct-slices publishes no patient ids: its split is by image, so slices of one patient may sit in training and '
          'test, which flatters the 0.3 test figures by an unknown amount, and slices of a patient are not independent (the intervals '
          'are too narrow by an unknown factor). These are single 8-bit slices mapped back to HU per image (two-peak calibration, '
          'pixel size assumed 0.7 mm); a slab of one slice is harder than a volume.',
          '- covid-ct-md: n = 1 per class on whole volumes: examples, not estimates. A volume\'s score is the max over its slices, so '
          'a per-slice false-positive rate of a few per cent becomes a large per-volume one.',
          f"- Rerun: `models/training/evaluate.sh` (or `/usr/bin/python3 models/training/evaluate_sources.py --card --baseline "
          'models/training/checkpoints/evaluate-sources-0.2.json --cross models/training/checkpoints/evaluate-sources-cross.json`); '
          'needs DCMTK `dcmdjpeg` and Node for `ctgate analyze`. The same three volumes are asserted in '
          '`test/integration/analyze-ctmd.test.ts`.', SOURCES_END]
    text = open(card).read()
    a, b = text.find(SOURCES_BEGIN), text.find(SOURCES_END)
    if a >= 0 and b > a:
        text = text[:a] + '\n'.join(L) + text[b + len(SOURCES_END):]
    else:
        at = text.find('## Lung segmentation')
        at = at if at >= 0 else len(text)
        text = text[:at] + '\n'.join(L) + '\n\n' + text[at:]
    with open(card, 'w') as f:
        f.write(text)
    print('wrote the per-source section of', card)


if __name__ == '__main__':
    main()
