"""Real COVID-19 CT slices (../shared/data, licences in its README) turned into what the service feeds the models.

The slices are 8-bit JPEGs, already windowed (each source with its own window), cropped to the lungs, without
pixel spacing. The service sees DICOM HU. To train on what the service will feed, each image is mapped back to
HU, then through the service's own steps (1 mm in-plane grid, window [-1024, 350] -> [0, 1]):

1. HU calibration, per source volume (pseudo-label set) or per set (doctor labels): the image histogram has two
   tissue peaks — aerated lung parenchyma and soft tissue (chest wall muscle, mediastinum). A linear map sends the
   lung peak to LUNG_PEAK_HU and the soft-tissue peak to SOFT_PEAK_HU. Checked on real HU CT (LIDC) rendered to
   8 bits with two lung windows and mapped back (test/integration/real-preprocessing.test.ts; 131-135 HU mean error).
2. Spacing: the crops carry none; ASSUMED_PIXEL_MM (a 512 matrix over a ~360 mm field of view, typical of chest
   CT) is resampled to the 1 mm grid; training zooms by +-20 % around it to cover the uncertainty.
3. Orientation: the doctor-labelled slices are rotated 90 degrees (anterior at the image left); they are rotated
   back to anterior-up, as the service's axial slices are. The pseudo-label volumes come rotated in different
   ways with no header to say how, so training augments with all eight flips/rotations (the lesion model and the
   slice classifier are trained orientation-invariant) — the service's orientation is then one of the trained ones.
"""
import gzip
import os
import re
from collections import deque

import numpy as np
from PIL import Image

DATA = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data'))
LUNG_PEAK_HU = -860.0
SOFT_PEAK_HU = 40.0
ASSUMED_PIXEL_MM = 0.7
WINDOW = (-1024, 350)
# The doctor-labelled split kept out of every training step (by slice; the set's README names no patient ids).
DOCTOR_TEST_FRACTION = 0.3
SPLIT_SEED = 20261203


def smooth_hist(values):
    h = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    h /= max(h.sum(), 1)
    return np.convolve(h, np.ones(5) / 5, mode='same')


def calibration(images):
    """(slope, intercept): HU = slope * v + intercept for 8-bit values v of these images (one window)."""
    h = sum(smooth_hist(im) for im in images)
    lung = int(np.argmax(h[:150]))
    lo = lung + 40
    soft = lo + int(np.argmax(h[lo:251]))
    slope = (SOFT_PEAK_HU - LUNG_PEAK_HU) / max(soft - lung, 1)
    return float(slope), float(LUNG_PEAK_HU - slope * lung), {'lungPeak': lung, 'softPeak': soft}


def window01(hu):
    lo, hi = WINDOW
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_grid(a, pixel_mm=ASSUMED_PIXEL_MM, mode='bilinear'):
    """Resample a 2-D array from pixel_mm to the model's 1 mm grid (first/last pixel centres kept, as the
    service's resampler does)."""
    import torch  # training only: the test helpers use the calibration without PyTorch
    import torch.nn.functional as F
    h, w = a.shape
    nh = max(2, int(round((h - 1) * pixel_mm)) + 1)
    nw = max(2, int(round((w - 1) * pixel_mm)) + 1)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(nh, nw), mode=mode, align_corners=True)[0, 0].numpy()


def read_gray(path):
    return np.array(Image.open(path).convert('L'))


def read_mask(path):
    im = Image.open(path)
    if im.mode == 'P':
        return np.array(im)  # palette labels (multiclass set)
    return np.array(im.convert('L')).astype(np.float32) / 255.0


def _num(name):
    return int(re.sub(r'\D', '', os.path.splitext(name)[0]) or 0)


def doctor_split():
    """Names (without extension) of the doctor-labelled slices: (train, test), a fixed seeded shuffle."""
    names = sorted((os.path.splitext(f)[0] for f in os.listdir(os.path.join(DATA, 'covid-slices-train', 'Imgs'))), key=_num)
    rng = np.random.RandomState(SPLIT_SEED)
    order = rng.permutation(len(names))
    n_test = int(round(len(names) * DOCTOR_TEST_FRACTION))
    test = sorted((names[i] for i in order[:n_test]), key=_num)
    train = sorted((names[i] for i in order[n_test:]), key=_num)
    return train, test


def load_doctor(names, with_classes=True):
    """Doctor-labelled slices as dicts {name, ct (1 mm grid, [0,1]), mask (0/1), ggo, cons, calibration}."""
    root = os.path.join(DATA, 'covid-slices-train')
    all_names = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, 'Imgs')))
    imgs = {n: np.rot90(read_gray(os.path.join(root, 'Imgs', n + '.jpg')), k=-1) for n in all_names}
    slope, icpt, peaks = calibration(list(imgs.values()))
    out = []
    for n in names:
        hu = imgs[n].astype(np.float32) * slope + icpt
        gt = np.rot90(read_mask(os.path.join(root, 'GT', n + '.png')), k=-1)
        item = {'name': n, 'source': 'doctor', 'ct': window01(to_grid(hu)), 'mask': (to_grid(gt) >= 0.5).astype(np.float32),
                'calibration': {'slope': slope, 'intercept': icpt, **peaks}}
        mc = os.path.join(DATA, 'covid-slices-multiclass-train', 'GT', n + '.png')
        if with_classes and os.path.exists(mc):
            lab = np.rot90(read_mask(mc), k=-1)
            item['ggo'] = (to_grid((lab == 1).astype(np.float32)) >= 0.5).astype(np.float32)
            item['cons'] = (to_grid((lab == 2).astype(np.float32)) >= 0.5).astype(np.float32)
        out.append(item)
    return out


def pseudo_volumes():
    root = os.path.join(DATA, 'covid-slices-pseudo', 'Imgs')
    vols = {}
    for f in os.listdir(root):
        v, _, n = os.path.splitext(f)[0].rpartition('_')
        vols.setdefault(v, []).append(int(n))
    return {v: sorted(ns) for v, ns in sorted(vols.items())}


def load_pseudo(volumes=None, every=1):
    """Pseudo-labelled slices (model-made soft masks in [0, 1]); calibration per source volume."""
    root = os.path.join(DATA, 'covid-slices-pseudo')
    out = []
    for v, ns in pseudo_volumes().items():
        if volumes is not None and v not in volumes:
            continue
        ns = ns[::every]
        imgs = [read_gray(os.path.join(root, 'Imgs', f'{v}_{n}.jpg')) for n in ns]
        slope, icpt, peaks = calibration(imgs)
        for n, im in zip(ns, imgs):
            hu = im.astype(np.float32) * slope + icpt
            gt = read_mask(os.path.join(root, 'GT', f'{v}_{n}.png'))
            out.append({'name': f'{v}_{n}', 'volume': v, 'source': 'pseudo', 'ct': window01(to_grid(hu)),
                        'mask': np.clip(to_grid(gt), 0, 1).astype(np.float32),
                        'calibration': {'slope': slope, 'intercept': icpt, **peaks}})
    return out


def doctor_hu(name):
    """A doctor-labelled slice as HU at its own pixel grid (ASSUMED_PIXEL_MM), anterior up, with its 0/1 mask:
    what a DICOM slice of it would hold (used to build real test slabs for the service)."""
    root = os.path.join(DATA, 'covid-slices-train')
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, 'Imgs')))
    imgs = {n: np.rot90(read_gray(os.path.join(root, 'Imgs', n + '.jpg')), k=-1) for n in names}
    slope, icpt, _ = calibration(list(imgs.values()))
    gt = np.rot90(read_mask(os.path.join(root, 'GT', name + '.png')), k=-1) >= 0.5
    return np.ascontiguousarray(imgs[name].astype(np.float32) * slope + icpt), np.ascontiguousarray(gt)


def jpeg_to_model_input(images, pixel_mm=ASSUMED_PIXEL_MM):
    """What training feeds for 8-bit slices of one window: calibrated HU on the 1 mm grid, windowed to [0, 1]."""
    slope, icpt, _ = calibration(images)
    return [window01(to_grid(im.astype(np.float32) * slope + icpt, pixel_mm)) for im in images]


def read_nifti(path):
    raw = gzip.open(path).read()
    dims = np.frombuffer(raw[40:56], '<i2')
    dtype = {2: np.uint8, 4: np.int16, 16: np.float32}[int(np.frombuffer(raw[70:72], '<i2')[0])]
    off = int(np.frombuffer(raw[108:112], '<f4')[0])
    slope, inter = np.frombuffer(raw[112:120], '<f4')
    n = int(dims[1]) * int(dims[2]) * int(dims[3])
    a = np.frombuffer(raw[off:off + n * np.dtype(dtype).itemsize], dtype).reshape(int(dims[3]), int(dims[2]), int(dims[1]))
    if slope not in (0, 1) or inter != 0:
        a = a * (slope or 1) + inter
    return a, float(np.frombuffer(raw[80:84], '<f4')[0])


def lung_bbox(hu2d):
    """Bounding box of the air-like pixels inside the body of one slice (the crop the service's lung box gives)."""
    air = hu2d < -320
    h, w = air.shape
    out = np.zeros_like(air)
    q = deque([(y, x) for y in range(h) for x in (0, w - 1)] + [(y, x) for x in range(w) for y in (0, h - 1)])
    while q:
        y, x = q.popleft()
        if 0 <= y < h and 0 <= x < w and air[y, x] and not out[y, x]:
            out[y, x] = True
            q.extend([(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)])
    lung = air & ~out
    if lung.sum() < 200:
        return None
    ys, xs = np.nonzero(lung)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def totalseg_lung_slices():
    """The TotalSegmentator CT's slices that hold lung (real, non-COVID: lung bases over the upper abdomen), each
    cropped to its lung box on the 1 mm grid, windowed; anterior up."""
    ct3, _ = read_nifti(os.path.join(DATA, 'totalseg-ct-small', 'example_ct_sm.nii.gz'))
    out = []
    for k in range(ct3.shape[0]):
        g = to_grid(np.flipud(ct3[k].astype(np.float32)), 3.0)  # RAS rows -> anterior up
        bb = lung_bbox(g)
        if bb is None:
            continue
        y0, y1, x0, x1 = bb
        if (y1 - y0) * (x1 - x0) < 400:
            continue
        out.append(window01(g)[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5])
    return out


# ------------------------------------------------------------------- sars-cov-2-ct-slices (Soares et al. 2020)
SARS = os.path.join(DATA, 'sars-cov-2-ct-slices')
SARS_SPLIT_SEED = 20261204
SARS_SPLIT = (0.6, 0.2, 0.2)  # train / validation (operating point) / test (never used to train or choose anything)


def sars_split():
    """{'train'|'val'|'test': [(relative path, label)]}: a seeded split BY IMAGE, per class (600 COVID-19, 600
    non-COVID-19). The set publishes no patient ids, so slices of one patient may sit on both sides."""
    out = {'train': [], 'val': [], 'test': []}
    for sub, label in (('COVID', 1), ('non-COVID', 0)):
        names = sorted(os.listdir(os.path.join(SARS, sub)), key=_num)
        order = np.random.RandomState(SARS_SPLIT_SEED + label).permutation(len(names))
        n_tr = int(round(len(names) * SARS_SPLIT[0]))
        n_va = int(round(len(names) * SARS_SPLIT[1]))
        for part, idx in (('train', order[:n_tr]), ('val', order[n_tr:n_tr + n_va]), ('test', order[n_tr + n_va:])):
            out[part] += [(f'{sub}/{names[i]}', label) for i in sorted(idx)]
    return out


def single_slice_input(im, pixel_mm=ASSUMED_PIXEL_MM):
    """One 8-bit lung-window slice as the service would see it: HU by a two-peak calibration of THIS image (the set
    names no volumes; a calibration per class would hand the label to the input), pixel_mm -> 1 mm grid, the lung
    box + 5 px (lung_bbox; whole image if none is found), window [-1024, 350] -> [0, 1]. Returns (ct, box found)."""
    slope, icpt, _ = calibration([im])
    hu = to_grid(im.astype(np.float32) * slope + icpt, pixel_mm)
    bb = lung_bbox(hu)
    y0, y1, x0, x1 = bb if bb is not None else (0, hu.shape[0], 0, hu.shape[1])
    return window01(hu)[max(0, y0 - 5):y1 + 5, max(0, x0 - 5):x1 + 5], bb is not None
