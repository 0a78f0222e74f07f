"""Exports the trained 0.2 models (train_real.py) to ONNX, writes parity fixtures and models/manifest.json.

  /usr/bin/python3 models/training/export.py --work WORK [--models models]

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

VERSION = '0.2.0'
INTENDED_USE = ('Research and integration testing of ctgate. Trained on 35 doctor-labelled and 1,454 pseudo-labelled real '
                'COVID-19 CT slices (COVID-SemiSeg / Inf-Net, non-commercial research use only) and synthetic phantoms. '
                'NOT FOR CLINICAL USE: not a medical device, not validated for diagnosis; see models/MODEL_CARD.md for '
                'the data, the metrics and the known limits.')


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


def export(models_dir, work):
    os.makedirs(os.path.join(models_dir, 'parity'), exist_ok=True)
    # Keep the PyTorch weights and the training summary beside the ONNX files (evaluate.py uses them).
    ckpt = os.path.join(models_dir, 'training', 'checkpoints')
    os.makedirs(ckpt, exist_ok=True)
    for name in ('seg.pt', 'cls.pt', 'train-summary.json'):
        if os.path.abspath(os.path.join(work, name)) != os.path.abspath(os.path.join(ckpt, name)):
            shutil.copyfile(os.path.join(work, name), os.path.join(ckpt, name))
    seg, cls = load_slice_nets(work)

    seg_path = os.path.join(models_dir, 'lesion-unetpp.onnx')
    cls_path = os.path.join(models_dir, 'covid-resnet.onnx')
    with torch.no_grad():
        torch.onnx.export(SplitHeads(seg).eval(), torch.zeros(1, 1, 4, 96, 96), seg_path, opset_version=13, input_names=['ct'],
                          output_names=['lesion_prob', 'lesion_kind'], do_constant_folding=True,
                          dynamic_axes={'ct': {2: 'D', 3: 'H', 4: 'W'}, 'lesion_prob': {2: 'D', 3: 'H', 4: 'W'},
                                        'lesion_kind': {2: 'D', 3: 'H', 4: 'W'}})
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
        lo = seg(torch.from_numpy(li))[:, :1].numpy().astype('<f4')
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
    manifest = {
        'schemaVersion': 1,
        'models': [
            {
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
                'name': 'covid-resnet', 'version': VERSION, 'task': 'classification',
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
                'thresholdRule': 'highest threshold with sensitivity >= 0.95 on the validation data (held-out pseudo-label volumes '
                                 'and their lesion slices, phantom validation studies), scored as deployed',
                'minOpacityMl': MIN_OPACITY_ML,
                'minOpacityRule': MIN_OPACITY_RULE,
                'architecture': {'type': 'ResNet per slice (basic blocks, (1,3,3) kernels, widths [16,32,64,96]), global max over slices '
                                         'and positions', 'params': count_params(cls)},
                'training': {**training_common, **{k: summ['cls'][k] for k in ('iters', 'batch', 'positives', 'negativesReal', 'negativesPhantom', 'seconds')}},
                'metrics': keep_test('covid-resnet', cls_sha, {
                    'validation': {'cases': val['cases'], 'positives': val['positives'], 'auc': val['auc'],
                                   'atThreshold': val['atThreshold'], 'note': 'the threshold was chosen on these cases'}}),
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
