"""Networks of ctgate's screening models (DESIGN.md, "The paper's pipeline"), version 0.2.

Slice-wise networks, trained on real 2-D COVID-19 slices and run on every axial slice of the service's (1, 1, 2.5) mm
grid. They are written with Conv3d kernels (1, k, k) and poolings (1, 2, 2), so the exported ONNX keeps the manifest's
NCDHW contract (the service tiles volumes as before) while no weight mixes slices: a slice's output depends on that
slice alone, exactly as in training.

* SliceUNetPP — 2-D U-Net++ (Zhou et al. 2018): nested dense skip pathways X^{i,j}, deep supervision, a stride-2
  stem (CPU budget), a full-resolution refinement head that also sees the input CT, and a kind head
  (ground-glass / consolidation).
* SliceResNet — basic-block ResNet over [CT, lesion mask] of each slice, global max over slices and positions.

BatchNorm everywhere: in eval mode it is a fixed affine map, so tile-wise and whole-volume inference agree and the
exported graph is a plain conv chain. Upsampling is nearest-neighbour (ONNX Resize). The 0.1 3-D networks
(synthetic-only) are in git history (commit e94d773).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def count_params(m):
    return sum(p.numel() for p in m.parameters())


K2 = (1, 3, 3)
P2 = (0, 1, 1)


class SliceConvBlock(nn.Module):
    def __init__(self, cin, cout, squeeze=False):
        super().__init__()
        layers = [nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)] if squeeze else []
        c = cout if squeeze else cin
        layers += [nn.Conv3d(c, cout, K2, padding=P2, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                   nn.Conv3d(cout, cout, K2, padding=P2, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SliceUNetPP(nn.Module):
    """2-D U-Net++ (nested dense skips, deep supervision) per axial slice. A stride-2 stem (in-plane) for the CPU
    budget, `depth` poolings, a full-resolution refinement head that also sees the input CT. Total in-plane
    stride 2^(depth+1). Training returns [deep-supervision logits..., final logits]; eval: sigmoid(final), or with
    classes=3 the eval output is [lesion prob, P(ground-glass | lesion), P(consolidation | lesion)]."""

    def __init__(self, in_ch=1, base=16, depth=3, classes=1):
        super().__init__()
        self.depth = depth
        self.classes = classes
        ch = [base * 2 ** i for i in range(depth + 1)]
        self.ch = ch
        self.stem = nn.Sequential(nn.Conv3d(in_ch, ch[0], K2, stride=(1, 2, 2), padding=P2, bias=False),
                                  nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.nodes = nn.ModuleDict()
        for i in range(depth + 1):
            self.nodes[f'{i}_0'] = SliceConvBlock(ch[0] if i == 0 else ch[i - 1], ch[i])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                self.nodes[f'{i}_{j}'] = SliceConvBlock(ch[i] * j + ch[i + 1], ch[i], squeeze=True)
        self.heads = nn.ModuleList([nn.Conv3d(ch[0], 1, 1) for _ in range(depth)])
        self.refine = nn.Sequential(nn.Conv3d(ch[0] + in_ch, ch[0], K2, padding=P2, bias=False),
                                    nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True))
        self.final = nn.Conv3d(ch[0], 1, 1)
        self.kind = nn.Conv3d(ch[0], 2, 1) if classes == 3 else None
        for head in [*self.heads, self.final]:
            nn.init.constant_(head.bias, -2.0)

    @staticmethod
    def up(x):
        return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode='nearest')

    def forward(self, x):
        X = {}
        h = self.stem(x)
        for i in range(self.depth + 1):
            h = self.nodes[f'{i}_0'](h if i == 0 else self.pool(h))
            X[(i, 0)] = h
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                inputs = [X[(i, k)] for k in range(j)] + [self.up(X[(i + 1, j - 1)])]
                X[(i, j)] = self.nodes[f'{i}_{j}'](torch.cat(inputs, dim=1))
        top = self.up(X[(0, self.depth)])
        r = self.refine(torch.cat([top, x], dim=1))
        out = self.final(r)
        kind = self.kind(r) if self.kind is not None else None
        if self.training:
            ds = [self.up(self.heads[j - 1](X[(0, j)])) for j in range(1, self.depth + 1)]
            return ds + [out], kind
        p = torch.sigmoid(out)
        if kind is None:
            return p
        return torch.cat([p, torch.softmax(kind, dim=1)], dim=1)


class SliceResNet(nn.Module):
    """Slice-wise ResNet classifier: basic blocks with (1, 3, 3) kernels on [CT, lesion mask] of every slice of
    the lung box, then a global MAX over all slices and positions (so a study's score is its most suspicious
    slice's evidence, and a model trained on single slices reads a stack of any depth), one logit."""

    def __init__(self, in_ch=2, widths=(16, 32, 64, 96)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_ch, widths[0], K2, stride=(1, 2, 2), padding=P2, bias=False),
                                  nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        layers = []
        cin = widths[0]
        for li, w in enumerate(widths):
            layers.append(SliceBasicBlock(cin, w, 1 if li == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(cin, 1)

    def forward(self, x):
        h = self.layers(self.stem(x))
        h = torch.flatten(F.adaptive_max_pool3d(h, 1), 1)
        logit = self.fc(self.dropout(h))
        if self.training:
            return logit
        return torch.sigmoid(logit)


class SliceBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        s = (1, stride, stride)
        self.c1 = nn.Conv3d(cin, cout, K2, stride=s, padding=P2, bias=False)
        self.b1 = nn.BatchNorm3d(cout)
        self.c2 = nn.Conv3d(cout, cout, K2, padding=P2, bias=False)
        self.b2 = nn.BatchNorm3d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=s, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def load_slice_nets(ckpt_dir, classes=3):
    import os
    state = torch.load(os.path.join(ckpt_dir, 'seg.pt'))
    seg = SliceUNetPP(base=int(state['stem.0.weight'].shape[0]), classes=classes)
    seg.load_state_dict(state)
    seg.eval()
    cls = SliceResNet()
    cls.load_state_dict(torch.load(os.path.join(ckpt_dir, 'cls.pt')))
    cls.eval()
    return seg, cls
