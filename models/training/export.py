"""Exports the trained models (train_real.py) to ONNX, writes parity fixtures and models/manifest.json.

  /usr/bin/python3 models/training/export.py --work WORK [--models models] [--classifier-only]

--classifier-only (classifier 0.3, retrained on the shipped lesion model 0.2): the lesion model's ONNX file, parity
fixtures and manifest entry are left exactly as they are; only the classifier is exported and its entry rewritten.

* models/lesion-unetpp.onnx — opset 13, input `ct` [1, 1, D, H, W] (D any, H, W dynamic multiples of 16),
  outputs `lesion_prob` [1, 1, D, H, W] and `lesion_kind` [1, 2, D, H, W] (P(ground-glass | lesion),
  P(consolidation | lesion)). Slice-wise: every kernel is (1, k, k), so slice z of the output depends only on
  slice z of the input.
* models/covid-resnet.onnx — opset 13, input `ct_mask` [1, 2, 32, 96, 96], output `prob` [1, 1] (max over slices).
* models/parity/*.f32 — raw little-endian float32: fixed deterministic inputs and PyTorch's outputs on them;
  check-onnx.mjs runs the ONNX files on them with onnxruntime-node.
* models/training/checkpoints/{seg,cls}.pt, train-summary.json — the PyTorch weights (copied from WORK).
* models/manifest.json — both networks (name, version, sha256, input contract, threshold, training data,
  validation metrics) and the classical lung segmentation the Node side implements. evaluate_real.py adds the
  test metrics (the ONNX files, and so the sha256 values, stay the same).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CLS_SHAPE, CROP_MARGIN, INFER_TILE, LESION_THRESHOLD, LUNG_WINDOW, SEG_OVERLAP, SPACING, WINDOW  # noqa: E402
from nets import count_params, load_slice_nets  # noqa: E402

VERSION = '0.2.0'       # lesion model (and lung-threshold entry)
CLS_VERSION = '0.3.0'   # classifier: retrained with real negatives (sars-cov-2-ct-slices), issue 17
INTENDED_USE = ('Research and integration testing of ctgate. Trained on 35 doctor-labelled and 1,454 pseudo-labelled real '
                'COVID-19 CT slices (COVID-SemiSeg / Inf-Net, non-commercial research use only) and synthetic phantoms. '
                'NOT FOR CLINICAL USE: not a medical device, not validated for diagnosis; see models/MODEL_CARD.md for '
                'the data, the metrics and the known limits.')
CLS_INTENDED_USE = ('Research and integration testing of ctgate. Trained on real COVID-19 and non-COVID-19 CT slices (COVID-SemiSeg / '
                    'Inf-Net and the SARS-CoV-2 CT-scan dataset of Soares et al. 2020, both research / non-commercial use only) and '
                    'synthetic phantoms. NOT FOR CLINICAL USE: not a medical device, not validated for diagnosis; see '
                    'models/MODEL_CARD.md for the data, the metrics and the known limits.')


# The service's category rule (src/inference/findings.ts): below this lesion volume a study has no significant opacity.
MIN_OPACITY_ML = 0.5
MIN_OPACITY_RULE = ('a study whose measured lesion volume is below this has no significant opacity (category no-significant-opacity), '
                    'whatever the classifier says; at or above it the classifier splits covid-19-like (probability >= threshold) from '
                    "other-opacity. 0.5 mL is the volume of a 1 cm sphere: the paper's smallest reliably seen ground-glass patch; a "
                    'larger value would hide nodules and small masses (a 3 cm mass is 14 mL). Set a priori, not fitted on any test case.')


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def lesion_fixture_input():
    """[1, 1, 16, 32, 32]: lung-like background (≈ −870 HU in the window) with noise, a ground-glass blob,
    a dense nodule and a vessel-like bright line — deterministic (numpy PCG64, seed 20200101)."""
    rng = np.random.default_rng(20200101)
    z, y, x = np.meshgrid(np.arange(16), np.arange(32), np.arange(32), indexing='ij')
    v = np.full((16, 32, 32), (-870 + 1024) / 1374, dtype=np.float64)
    v[((z - 8) * 2.5) ** 2 + (y - 12) ** 2 + (x - 20) ** 2 < 49] = (-520 + 1024) / 1374
    v[((z - 6) * 2.5) ** 2 + (y - 24) ** 2 + (x - 8) ** 2 < 16] = (30 + 1024) / 1374
    v[(np.abs(y - 5) <= 1) & (np.abs(x - 5) <= 1)] = (40 + 1024) / 1374
    v += rng.normal(0, 15 / 1374, v.shape)
    return np.clip(v, 0, 1).astype(np.float32)[None, None]


def classifier_fixture_input():
    """[1, 2, 32, 96, 96], piecewise constant (compresses well in git): body ellipse (soft tissue), two lung
    ellipses, two peripheral ground-glass blobs; channel 2 = those blobs as a 0/1 mask."""
    z, y, x = np.meshgrid(np.arange(32), np.arange(96), np.arange(96), indexing='ij')
    w = lambda hu: (hu + 1024) / 1374  # noqa: E731
    ct = np.zeros((32, 96, 96), dtype=np.float32)
    ct[((y - 48) / 46) ** 2 + ((x - 48) / 47) ** 2 < 1] = w(40)
    for cx in (26, 70):
        ct[((y - 46) / 38) ** 2 + ((x - cx) / 20) ** 2 + ((z - 16) / 17) ** 2 < 1] = w(-860)
    mask = np.zeros_like(ct)
    for (cz, cy, cx) in ((12, 60, 12), (20, 64, 84)):
        blob = ((y - cy) / 8) ** 2 + ((x - cx) / 6) ** 2 + ((z - cz) / 4) ** 2 < 1
        blob &= ct < w(-500)
        ct[blob] = w(-530)
        mask[blob] = 1
    return np.stack([ct, mask])[None].astype(np.float32)


class SplitHeads(torch.nn.Module):
    """The exported graph: [lesion prob, kind probs] as two named outputs."""

    def __init__(self, seg):
        super().__init__()
        self.seg = seg

    def forward(self, x):
        y = self.seg(x)
        return y[:, :1], y[:, 1:]


def export(models_dir, work, classifier_only=False):
    os.makedirs(os.path.join(models_dir, 'parity'), exist_ok=True)
    # Keep the PyTorch weights and the training summary beside the ONNX files (evaluate.py uses them).
    ckpt = os.path.join(models_dir, 'training', 'checkpoints')
    os.makedirs(ckpt, exist_ok=True)
    if classifier_only:  # the shipped lesion model must be the one the classifier was trained on
        same = torch.load(os.path.join(work, 'seg.pt'))
        shipped = torch.load(os.path.join(ckpt, 'seg.pt'))
        if same.keys() != shipped.keys() or any(not torch.equal(same[k], shipped[k]) for k in same):
            raise SystemExit('--classifier-only: WORK/seg.pt is not the shipped lesion model (checkpoints/seg.pt)')
    for name in ('seg.pt', 'cls.pt', 'train-summary.json'):
        if os.path.abspath(os.path.join(work, name)) != os.path.abspath(os.path.join(ckpt, name)):
            shutil.copyfile(os.path.join(work, name), os.path.join(ckpt, name))
    seg, cls = load_slice_nets(work)

    seg_path = os.path.join(models_dir, 'lesion-unetpp.onnx')
    cls_path = os.path.join(models_dir, 'covid-resnet.onnx')
    with torch.no_grad():
        if not classifier_only:
            torch.onnx.export(SplitHeads(seg).eval(), torch.zeros(1, 1, 4, 96, 96), seg_path, opset_version=13, input_names=['ct'],
                              output_names=['lesion_prob', 'lesion_kind'], do_constant_folding=True,
                              dynamic_axes={'ct': {2: 'D', 3: 'H', 4: 'W'}, 'lesion_prob': {2: 'D', 3: 'H', 4: 'W'},
                                            'lesion_kind': {2: 'D', 3: 'H', 4: 'W'}})
        torch.onnx.export(cls, torch.zeros(1, 2, *CLS_SHAPE), cls_path, opset_version=13, input_names=['ct_mask'],
                          output_names=['prob'], do_constant_folding=True)
    for p in ([cls_path] if classifier_only else [seg_path, cls_path]):
        m = onnx.load(p)
        onnx.checker.check_model(m, full_check=True)
        m.producer_name = 'ctgate models/training/export.py'
        m.doc_string = CLS_INTENDED_USE if p == cls_path else INTENDED_USE
        onnx.save(m, p)
        onnx.checker.check_model(onnx.load(p), full_check=True)
        print(f'{p}: {os.path.getsize(p)} bytes, onnx checker ok, inputs '
              f'{[(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input]}, outputs '
              f'{[(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]}')

    # Parity fixtures: PyTorch's outputs on fixed inputs (the Node test runs the ONNX files on the same inputs).
    pdir = os.path.join(models_dir, 'parity')
    li = lesion_fixture_input()
    ci = classifier_fixture_input()
    with torch.no_grad():
        lo = seg(torch.from_numpy(li))[:, :1].numpy().astype('<f4')
        co = cls(torch.from_numpy(ci)).numpy().astype('<f4')
    if classifier_only:  # the lesion fixtures on disk must still be this lesion model's outputs
        old_lo = np.fromfile(os.path.join(pdir, 'lesion-expected.f32'), dtype='<f4').reshape(lo.shape)
        if float(np.abs(old_lo - lo).max()) > 1e-5:
            raise SystemExit('--classifier-only: models/parity/lesion-expected.f32 does not match the lesion model')
    else:
        li.astype('<f4').tofile(os.path.join(pdir, 'lesion-input.f32'))
        lo.tofile(os.path.join(pdir, 'lesion-expected.f32'))
    ci.astype('<f4').tofile(os.path.join(pdir, 'classifier-input.f32'))
    co.tofile(os.path.join(pdir, 'classifier-expected.f32'))
    parity = {
        'lesion': {'input': 'lesion-input.f32', 'inputShape': list(li.shape), 'expected': 'lesion-expected.f32',
                   'expectedShape': list(lo.shape), 'expectedRange': [float(lo.min()), float(lo.max())]},
        'classifier': {'input': 'classifier-input.f32', 'inputShape': list(ci.shape), 'expected': 'classifier-expected.f32',
                       'expectedShape': list(co.shape), 'expectedValue': float(co.ravel()[0])},
        'dtype': 'float32 little-endian, C order (x fastest)', 'tolerance': 'max |onnx − torch| ≤ 1e-4 is expected',
    }
    with open(os.path.join(pdir, 'parity.json'), 'w') as f:
        json.dump(parity, f, indent=2)
        f.write('\n')
    print('parity fixtures:', json.dumps(parity))
    return seg, cls, seg_path, cls_path


def build_manifest(models_dir, work, seg, cls, seg_path, cls_path, classifier_only=False):
    with open(os.path.join(work, 'train-summary.json')) as f:
        summ = json.load(f)
    val = summ['validation']
    d = summ['data']
    training_common = {
        'data': {
            'realPositives': f"{len(d['doctorTrain'])} doctor-labelled COVID-19 slices (covid-slices-train / multiclass, Inf-Net "
                             f"COVID-SemiSeg, MedSeg) and {d['pseudoSlicesTrain']} pseudo-labelled slices from "
                             f"{len(d['pseudoVolumesTrain'])} real COVID-19 CT volumes (covid-slices-pseudo, Semi-Inf-Net masks)",
            'realNegatives': 'slices of those volumes without lesion (no real non-COVID patient is in the training data)',
            'synthetic': f"{d['phantomSlices']} phantom slices (src/synthetic/phantom.ts via make-dataset.ts): healthy, lobar "
                         'pneumonia, nodule, old lesion (negatives) and covid-like',
            'heldOut': {'doctorTest': d['doctorTest'], 'pseudoValidationVolumes': d['pseudoVolumesValidation']},
            'licence': 'COVID-SemiSeg: non-commercial research use only (../shared/data/README.md)',
            'preprocessing': 'JPEG -> HU by a two-peak calibration per volume (lung parenchyma -860 HU, soft tissue +40 HU), '
                             'rotated to anterior-up where known, 0.7 mm pixels assumed -> 1 mm grid, window [-1024, 350] -> [0, 1] '
                             '(models/training/real_data.py)',
        },
        'optimizer': summ['optimizer'], 'seconds': summ['seconds'], 'torch': summ['torch'],
    }
    crop = {'method': 'lung bounding box on the (1, 1, 2.5) mm grid, plus a margin, clipped to the volume; not masked',
            'marginVoxels': CROP_MARGIN}
    old = {}
    mpath = os.path.join(models_dir, 'manifest.json')
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
    old_metrics = {m['name']: m.get('metrics', {}) for m in old.get('models', [])}

    def keep_test(name, sha, metrics):
        prev = old_metrics.get(name, {})
        if prev.get('test') and prev.get('modelSha256') == sha:
            metrics['test'] = prev['test']
        metrics['modelSha256'] = sha
        return metrics

    seg_sha = sha256(seg_path)
    cls_sha = sha256(cls_path)
    sars = d.get('sars')
    cls_training = json.loads(json.dumps(training_common))
    if sars:
        cls_training['data']['realPositives'] += (f"; {sars['trainImages'] // 2} COVID-19 slices of sars-cov-2-ct-slices (Soares et al. 2020, "
                                                  'São Paulo) from its training split')
        cls_training['data']['realNegatives'] = (f"{sars['trainImages'] // 2} non-COVID-19 slices of sars-cov-2-ct-slices (real patients, "
                                                 'including other lung disease) from its training split; lesion-free slices of the '
                                                 'COVID-SemiSeg volumes (some with pasted nodules)')
        cls_training['data']['heldOut']['sarsCov2CtSlices'] = {
            'split': 'by image (the set names no patients), seeded per class, models/training/real_data.py sars_split()',
            'seed': sars['seed'], 'fractions': {'train': sars['fractions'][0], 'validation': sars['fractions'][1], 'test': sars['fractions'][2]},
            'validationImages': sars['valImages'], 'use': 'validation: operating point only; test: evaluate_sources.py only'}
        cls_training['data']['testOnly'] = 'covid-ct-md volumes (P002, cap002, normal002): never used for training or the threshold'
        cls_training['data']['licence'] += '; sars-cov-2-ct-slices: research, non-commercial use only'
        cls_training['data']['preprocessing'] += ('; sars-cov-2-ct-slices: the same map with the calibration per image, lung box + 5 px '
                                                  '(real_data.single_slice_input); each training image also re-encoded as JPEG '
                                                  '(quality 35-90) at a random pixel size 0.6-0.85 mm')
        cls_training['augmentation'] = ('flips and 90-degree rotations, zoom out (pad 0-30 %) and in (crop 0-8 % per side), contrast '
                                        'x0.85-1.15, offset +-110 HU, noise, JPEG re-encoding of real crops (quality 30-95)')
        cls_training['batchMix'] = (f"half positive, half negative; {sars['share']:.0%} of each from sars-cov-2-ct-slices, the rest from "
                                    'the 0.2 data (COVID-SemiSeg lesion slices / lesion-free slices, pasted nodules, phantoms)')
    threshold_rule = ('highest threshold with sensitivity >= 0.95 on the validation data (held-out pseudo-label volumes '
                      'and their lesion slices, phantom validation studies), scored as deployed')
    if sars:
        threshold_rule = (f"lowest threshold (highest sensitivity) with specificity >= {sars['minSpecificity']} on the {sars['valImages'] // 2} "
                          'validation non-COVID-19 slices of sars-cov-2-ct-slices (one-slice slabs, scored as deployed), rounded up to '
                          '3 decimals; a study is the max over its slices, so its specificity needs a slice-level one well above it. '
                          'Never chosen on a test split or on covid-ct-md')
    cls_keys = ('iters', 'batch', 'positives', 'negativesReal', 'negativesPhantom', 'sarsPositives', 'sarsNegatives', 'seconds')
    old_seg_entry = next((m for m in old.get('models', []) if m['name'] == 'lesion-unetpp'), None)
    if classifier_only and (old_seg_entry is None or old_seg_entry['sha256'] != seg_sha):
        raise SystemExit('--classifier-only: the manifest does not describe models/lesion-unetpp.onnx')
    manifest = {
        'schemaVersion': 1,
        'models': [
            old_seg_entry if classifier_only else {
                'name': 'lesion-unetpp', 'version': VERSION, 'task': 'lesion-segmentation',
                'file': os.path.basename(seg_path), 'sha256': seg_sha, 'bytes': os.path.getsize(seg_path),
                'input': {'name': 'ct', 'shape': [1, 1, 'D', 'H', 'W'], 'dtype': 'float32', 'layout': 'NCDHW',
                          'spacing': SPACING, 'window': WINDOW, 'patch': list(INFER_TILE), 'overlap': list(SEG_OVERLAP),
                          'multipleOf': 16, 'sliceWise': True, 'crop': crop, 'padValue': 0},
                'outputs': [{'name': 'lesion_prob', 'meaning': 'per-voxel probability that the voxel is lesion (any kind)'},
                            {'name': 'lesion_kind', 'meaning': 'channel 0: P(ground-glass opacity | lesion), channel 1: P(consolidation | lesion)'}],
                'threshold': LESION_THRESHOLD,
                'architecture': {'type': '2-D U-Net++ per axial slice (nested dense skip pathways, deep supervision), as Conv3d (1,3,3)',
                                 'stem': 'conv 1x3x3 stride (1,2,2) (z,y,x)', 'poolings': seg.depth,
                                 'totalStride': [1, 2 ** (seg.depth + 1), 2 ** (seg.depth + 1)],
                                 'channels': seg.ch, 'params': count_params(seg),
                                 'inferenceHead': 'final full-resolution head (X^{0,depth} upsampled + input CT -> conv), sigmoid; '
                                                  'kind head (softmax over ground-glass / consolidation) on the same features'},
                'training': {**training_common, **{k: summ['seg'][k] for k in ('iters', 'batch', 'patch', 'seconds')},
                             'loss': 'BCE + soft Dice on each deep-supervision head and the final head; kind head cross-entropy on '
                                     'doctor-labelled lesion pixels',
                             'augmentation': 'flips and 90-degree rotations, zoom 0.8-1.25, pan, contrast x0.85-1.15, offset +-110 HU, noise'},
                'metrics': keep_test('lesion-unetpp', seg_sha, {}),
                'intendedUse': INTENDED_USE,
            },
            {
                'name': 'covid-resnet', 'version': CLS_VERSION if sars else VERSION, 'task': 'classification',
                'file': os.path.basename(cls_path), 'sha256': cls_sha, 'bytes': os.path.getsize(cls_path),
                'input': {'name': 'ct_mask', 'shape': [1, 2, *CLS_SHAPE], 'dtype': 'float32', 'layout': 'NCDHW',
                          'spacing': SPACING, 'window': WINDOW,
                          'channels': ['ct: lung-region CT, window [-1024,350] scaled to [0,1]',
                                       'lesion: lesion mask (0/1) from the lesion model at its threshold'],
                          'crop': crop,
                          'resize': {'size': list(CLS_SHAPE), 'mode': 'linear', 'alignCorners': True,
                                     'note': 'both channels: the whole lung crop resized (trilinear) to 32x96x96 (z y x)'}},
                'outputs': [{'name': 'prob', 'meaning': 'probability that the study is COVID-19-like (its most suspicious slice)'}],
                'threshold': val['threshold'] if 'threshold' in val else summ['threshold'],
                'thresholdRule': threshold_rule,
                'minOpacityMl': MIN_OPACITY_ML,
                'minOpacityRule': MIN_OPACITY_RULE,
                'architecture': {'type': 'ResNet per slice (basic blocks, (1,3,3) kernels, widths [16,32,64,96]), global max over slices '
                                         'and positions', 'params': count_params(cls)},
                'training': {**cls_training, **{k: summ['cls'][k] for k in cls_keys if k in summ['cls']}},
                'metrics': keep_test('covid-resnet', cls_sha, {
                    'validation': {'cases': val['cases'], 'positives': val['positives'], 'auc': val['auc'],
                                   'atThreshold': val['atThreshold'], **({'byGroup': val['byGroup']} if val.get('byGroup') else {}),
                                   'note': 'the threshold was chosen on these cases'}}),
                'intendedUse': CLS_INTENDED_USE if sars else INTENDED_USE,
            },
            {
                'name': 'lung-threshold', 'version': VERSION, 'task': 'lung-segmentation', 'method': 'classical',
                'input': {'spacing': SPACING, 'window': LUNG_WINDOW},
            },
        ],
    }
    with open(mpath, 'w') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    print('wrote', mpath)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--work', required=True)
    ap.add_argument('--models', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    ap.add_argument('--classifier-only', action='store_true', help='keep the lesion model files and manifest entry as they are')
    args = ap.parse_args()
    torch.set_num_threads(2)
    models_dir = os.path.abspath(args.models)
    seg, cls, seg_path, cls_path = export(models_dir, args.work, args.classifier_only)
    build_manifest(models_dir, args.work, seg, cls, seg_path, cls_path, args.classifier_only)


if __name__ == '__main__':
    main()
