"""PyTorch side of bench/models.ts: the same networks (models/training/nets.py, weights from
models/training/checkpoints) on the inputs the ONNX run captured. Prints one JSON line.
Usage: /usr/bin/python3 bench/models-torch.py DUMP_DIR THREADS REPEAT"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'models', 'training'))
from nets import load_slice_nets  # noqa: E402

dump, threads, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
ckpt = os.path.join(HERE, '..', 'models', 'training', 'checkpoints')
seg, cls = load_slice_nets(ckpt)

x = torch.from_numpy(np.load(os.path.join(dump, 'lesion-input.npy')))[None, None]
c = torch.from_numpy(np.load(os.path.join(dump, 'classifier-input.npy')))[None]


def best(fn):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


with torch.inference_mode():
    lesion_ms = best(lambda: seg(x))
    cls_ms = best(lambda: cls(c))
print(json.dumps({'lesionMs': lesion_ms, 'classifierMs': cls_ms, 'torch': torch.__version__,
                  'peakRssMb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
