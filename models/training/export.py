"""Exports the trained models to ONNX, writes parity fixtures and models/manifest.json.

  nice -n 19 /usr/bin/python3 models/training/export.py --work WORK [--models models]

* models/lesion-unetpp.onnx — opset 13, input `ct` [1, 1, D, H, W] (D, H, W dynamic, multiples of 8),
  output `lesion_prob` [1, 1, D, H, W] (sigmoid of the final full-resolution head).
* models/covid-resnet.onnx — opset 13, input `ct_mask` [1, 2, 32, 96, 96], output `prob` [1, 1].
* models/parity/*.f32 — raw little-endian float32: fixed deterministic inputs and PyTorch's outputs on them
  (lesion: [1, 1, 16, 32, 32]; classifier: [1, 2, 32, 96, 96]); models/parity/README.md says what they are.
* models/training/checkpoints/{seg,cls}.pt, train-summary.json — the PyTorch weights (copied from WORK) that
  evaluate.py runs; it checks them against the parity fixtures.
* models/manifest.json — schemaVersion 1: both networks (name, version, sha256, input contract, threshold,
  training data, validation metrics) plus the classical lung segmentation the Node side implements.
  evaluate.py later adds the held-out test metrics (the ONNX files, and so the sha256 values, stay the same).
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
from common import (CLS_SHAPE, CROP_MARGIN, INFER_TILE, LESION_THRESHOLD, LUNG_WINDOW, SEG_OVERLAP, SEG_PATCH, SPACING,  # noqa: E402
                    WINDOW)
from nets import count_params, load_nets  # noqa: E402

VERSION = '0.1.0'
INTENDED_USE = ('Reference models for developing and testing ctgate (integration, plumbing, demos). Trained only on '
                'synthetic phantoms made by the project (src/synthetic/phantom.ts). NOT FOR CLINICAL USE: not a medical '
                'device, not validated on patients; see models/MODEL_CARD.md for known limits.')


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


def export(models_dir, work):
    os.makedirs(os.path.join(models_dir, 'parity'), exist_ok=True)
    # Keep the PyTorch weights and the training summary beside the ONNX files (evaluate.py uses them).
    ckpt = os.path.join(models_dir, 'training', 'checkpoints')
    os.makedirs(ckpt, exist_ok=True)
    for name in ('seg.pt', 'cls.pt', 'train-summary.json'):
        if os.path.abspath(os.path.join(work, name)) != os.path.abspath(os.path.join(ckpt, name)):
            shutil.copyfile(os.path.join(work, name), os.path.join(ckpt, name))
    seg, cls = load_nets(work)

    seg_path = os.path.join(models_dir, 'lesion-unetpp.onnx')
    cls_path = os.path.join(models_dir, 'covid-resnet.onnx')
    with torch.no_grad():
        torch.onnx.export(seg, torch.zeros(1, 1, 32, 96, 96), seg_path, opset_version=13, input_names=['ct'],
                          output_names=['lesion_prob'], do_constant_folding=True,
                          dynamic_axes={'ct': {2: 'D', 3: 'H', 4: 'W'}, 'lesion_prob': {2: 'D', 3: 'H', 4: 'W'}})
        torch.onnx.export(cls, torch.zeros(1, 2, *CLS_SHAPE), cls_path, opset_version=13, input_names=['ct_mask'],
                          output_names=['prob'], do_constant_folding=True)
    for p in (seg_path, cls_path):
        m = onnx.load(p)
        onnx.checker.check_model(m, full_check=True)
        m.producer_name = 'ctgate models/training/export.py'
        m.doc_string = INTENDED_USE
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
        lo = seg(torch.from_numpy(li)).numpy().astype('<f4')
        co = cls(torch.from_numpy(ci)).numpy().astype('<f4')
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


def build_manifest(models_dir, work, seg, cls, seg_path, cls_path):
    with open(os.path.join(work, 'train-summary.json')) as f:
        summ = json.load(f)
    val = summ['validation']
    training_common = {
        'data': 'synthetic chest CT phantoms from src/synthetic/phantom.ts (generateChestCt), made by '
                'models/training/make-dataset.ts; no patient data',
        'train': summ['data']['train'], 'validation': summ['data']['val'],
        'generator': {'size': '[160, 160, 56..64]', 'spacingMm': '[2.0..2.4, 2.0..2.4, 5]', 'noiseSigmaHu': '10..25'},
        'optimizer': {k: summ['settings'][k] for k in ('optimizer', 'lr', 'lrSchedule', 'weightDecay')},
        'seconds': summ['seconds'], 'torch': summ['settings']['torch'],
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
        # Test metrics from a previous evaluate.py run belong to the same ONNX file only.
        prev = old_metrics.get(name, {})
        if prev.get('test') and prev.get('modelSha256') == sha:
            metrics['test'] = prev['test']
        metrics['modelSha256'] = sha  # the file these metrics were measured on
        return metrics

    seg_sha = sha256(seg_path)
    cls_sha = sha256(cls_path)
    manifest = {
        'schemaVersion': 1,
        'models': [
            {
                'name': 'lesion-unetpp', 'version': VERSION, 'task': 'lesion-segmentation',
                'file': os.path.basename(seg_path), 'sha256': seg_sha, 'bytes': os.path.getsize(seg_path),
                'input': {'name': 'ct', 'shape': [1, 1, 'D', 'H', 'W'], 'dtype': 'float32', 'layout': 'NCDHW',
                          'spacing': SPACING, 'window': WINDOW, 'patch': list(INFER_TILE), 'overlap': list(SEG_OVERLAP),
                          'multipleOf': 8, 'crop': crop,
                          'padValue': 0},
                'outputs': [{'name': 'lesion_prob', 'meaning': 'per-voxel probability that the voxel is lesion (any kind)'}],
                'threshold': LESION_THRESHOLD,
                'architecture': {'type': '3D U-Net++ (nested dense skip pathways, deep supervision)',
                                 'stem': 'conv 3x3x3 stride (1,2,2) (z,y,x)', 'poolings': seg.depth,
                                 'totalStride': [2 ** seg.depth, 2 ** (seg.depth + 1), 2 ** (seg.depth + 1)],
                                 'channels': seg.ch, 'params': count_params(seg),
                                 'inferenceHead': 'final full-resolution head only (X^{0,2} upsampled + input CT -> conv), '
                                                  'sigmoid; the deep-supervision heads on X^{0,1}, X^{0,2} are training-only'},
                'training': {**training_common, **summ['settings']['seg']},
                'metrics': keep_test('lesion-unetpp', seg_sha, {
                    'validation': {'lesionDiceMean': val['lesionDiceMean'], 'lesionDiceByKind': val['lesionDiceByKind'],
                                   'cases': val['cases'], 'note': 'synthetic validation studies, whole crop, threshold 0.5'}}),
                'intendedUse': INTENDED_USE,
            },
            {
                'name': 'covid-resnet', 'version': VERSION, 'task': 'classification',
                'file': os.path.basename(cls_path), 'sha256': cls_sha, 'bytes': os.path.getsize(cls_path),
                'input': {'name': 'ct_mask', 'shape': [1, 2, *CLS_SHAPE], 'dtype': 'float32', 'layout': 'NCDHW',
                          'spacing': SPACING, 'window': WINDOW,
                          'channels': ['ct: lung-region CT, window [-1024,350] scaled to [0,1]',
                                       'lesion: lesion mask (0/1) from the lesion model at its threshold'],
                          'crop': crop,
                          'resize': {'size': list(CLS_SHAPE), 'mode': 'linear', 'alignCorners': True,
                                     'note': 'both channels: the whole lung crop resized (trilinear) to 32x96x96 (z y x); output '
                                             'voxel o samples input coordinate o*(n_in-1)/(n_out-1) — the grid spanning the same '
                                             'first and last voxel centres (src/imaging/resample.ts with such a geometry); the '
                                             'mask channel is the interpolated 0/1 mask (values in [0,1])'}},
                'outputs': [{'name': 'prob', 'meaning': 'probability that the study is COVID-19-like'}],
                'threshold': val['threshold'],
                'thresholdRule': 'highest threshold with sensitivity >= 0.95 on the validation split, scored as deployed '
                                 '(lesion channel = the lesion model\'s mask at 0.5)',
                'architecture': {'type': '3D ResNet, basic blocks [1,1,1,1], widths [8,16,32,64], global avg+max pooling', 'params': count_params(cls)},
                'training': {**training_common, **summ['settings']['cls']},
                'metrics': keep_test('covid-resnet', cls_sha, {
                    'validation': {'cases': val['cases'], 'positives': val['positives'], 'auc': val['auc'],
                                   'atThreshold': val['atThreshold'], 'aucWithTruthMask': val['aucTruthMask'],
                                   'note': 'synthetic validation studies (the threshold was chosen on them)'}}),
                'intendedUse': INTENDED_USE,
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
    args = ap.parse_args()
    torch.set_num_threads(2)
    models_dir = os.path.abspath(args.models)
    seg, cls, seg_path, cls_path = export(models_dir, args.work)
    build_manifest(models_dir, args.work, seg, cls, seg_path, cls_path)


if __name__ == '__main__':
    main()
