"""The training side of test/integration/real-preprocessing.test.ts: what models/training/real_data.py feeds the
models, as JSON on stdout.

  /usr/bin/python3 test/helpers/real-preprocessing.py training-input NAME
      load_doctor([NAME])[0]['ct'] (calibrated HU -> 1 mm grid -> window -> [0, 1]; needs PyTorch) as float32
      base64, with its shape and the source crop's shape and pixel size.
  /usr/bin/python3 test/helpers/real-preprocessing.py calibration LO,HI [LO,HI ...]
      The HU calibration checked on real HU CT (lidc-chest/0.dcm): the slice rendered to 8 bits with each window,
      cropped to its lung bounding box (as the COVID-19 JPEG crops are), mapped back with real_data.calibration;
      the HU error over the lung (HU < -500, not connected to the image border) per window.
"""
import base64
import json
import os
import sys
from collections import deque

import numpy as np
import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'models', 'training'))
import real_data  # noqa: E402


def training_input(name):
    if name not in real_data.doctor_split()[1]:
        raise SystemExit('slice %r is not in the doctor test split' % name)
    item = real_data.load_doctor([name], with_classes=False)[0]
    ct = np.ascontiguousarray(item['ct'], dtype='<f4')
    hu, _ = real_data.doctor_hu(name)
    return {
        'name': name,
        'shape': list(ct.shape),
        'ct': base64.b64encode(ct.tobytes()).decode(),
        'cropShape': list(hu.shape),
        'pixelMm': real_data.ASSUMED_PIXEL_MM,
        'window': list(real_data.WINDOW),
        'calibration': item['calibration'],
    }


def inside_air(hu, threshold=-500.0):
    """Pixels below threshold that are not 4-connected to the image border (the lungs and airways)."""
    air = hu < threshold
    h, w = air.shape
    outside = np.zeros_like(air)
    q = deque()
    for y in range(h):
        for x in (0, w - 1):
            if air[y, x] and not outside[y, x]:
                outside[y, x] = True
                q.append((y, x))
    for x in range(w):
        for y in (0, h - 1):
            if air[y, x] and not outside[y, x]:
                outside[y, x] = True
                q.append((y, x))
    while q:
        y, x = q.popleft()
        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= yy < h and 0 <= xx < w and air[yy, xx] and not outside[yy, xx]:
                outside[yy, xx] = True
                q.append((yy, xx))
    return air & ~outside


def calibration(windows):
    ds = pydicom.dcmread(os.path.join(real_data.DATA, 'lidc-chest', '0.dcm'))
    hu = ds.pixel_array.astype(np.float64) * float(getattr(ds, 'RescaleSlope', 1)) + float(getattr(ds, 'RescaleIntercept', 0))
    lung = inside_air(hu)
    ys, xs = np.nonzero(lung)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop, lung_crop = hu[y0:y1, x0:x1], lung[y0:y1, x0:x1]
    out = []
    for lo, hi in windows:
        v = np.round(np.clip((crop - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        slope, icpt, peaks = real_data.calibration([v])
        err = (v.astype(np.float64) * slope + icpt) - crop
        e = err[lung_crop]
        out.append({
            'window': [lo, hi],
            'slope': slope,
            'intercept': icpt,
            'peaks': peaks,
            # The ideal map for this window, for comparison: HU = lo + v * (hi - lo) / 255.
            'idealSlope': (hi - lo) / 255.0,
            'idealIntercept': float(lo),
            'meanAbsErrorHu': float(np.abs(e).mean()),
            'meanErrorHu': float(e.mean()),
            'medianLungHu': float(np.median(crop[lung_crop])),
        })
    return {'bbox': [x0, y0, x1 - x0, y1 - y0], 'lungPixels': int(lung_crop.sum()), 'windows': out}


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == 'training-input':
        r = training_input(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == 'calibration':
        r = calibration([tuple(float(x) for x in w.split(',')) for w in sys.argv[2:]])
    else:
        raise SystemExit(__doc__)
    json.dump(r, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
