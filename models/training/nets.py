"""Networks for ctgate's reference models (DESIGN.md, "The paper's pipeline").

* LesionUNetPP — a small 3D U-Net++ (Zhou et al. 2018): nested, dense skip pathways X^{i,j}, deep supervision.
  A stride-(1, 2, 2) stem conv, then two 2x2x2 poolings (three levels, channels 8/16/32): three in-plane and two
  z downsamplings, total stride z 4, y/x 8, so any input whose z, y, x are multiples of 8 works (fully
  convolutional). Backbone nodes X^{i,0}: two 3x3x3 conv-BN-ReLU; nested nodes X^{i,j>0}: 1x1x1 bottleneck on the
  dense concatenation [X^{i,0..j-1}, Up(X^{i+1,j-1})], then two 3x3x3 conv-BN-ReLU. Heads: deep supervision on
  X^{0,1} and X^{0,2}, and a final full-resolution head (X^{0,2} upsampled, concatenated with the input CT, one
  3x3x3 conv). Training returns all three heads' logits (loss averaged over them); inference (eval mode, and the
  exported ONNX) uses only the final head, through a sigmoid: per-voxel lesion probability. The stride-2 stem is
  for the CPU budget: it made training ~3x and inference ~5x cheaper than a full-resolution level 0 (the
  synthetic source volumes are 2.0-2.4 mm in-plane, so a 2 mm working grid loses little on them).
* CovidResNet — a small 3D ResNet (basic blocks, [1, 1, 1, 1], widths 8-16-32-64, global average + max pooling
  concatenated before the final linear layer), two input channels
  (lung-region CT in the [-1024, 350] window scaled to [0, 1]; lesion mask), one logit. In eval mode the
  forward returns the sigmoid probability.

BatchNorm everywhere: in eval mode it is a fixed affine map, so patch-wise and whole-volume inference agree and
the exported graph is a plain conv chain. Upsampling is nearest-neighbour (ONNX Resize, any rank).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Module):
    """Two 3x3x3 conv -> BN -> ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class NestedBlock(nn.Module):
    """A nested (skip-pathway) node: 1x1x1 conv that compresses the dense concatenation (as in DenseNet-BC),
    then two 3x3x3 conv -> BN -> ReLU. Half the multiply-adds of a plain ConvBlock on the wide concatenation."""

    def __init__(self, cin, cout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class LesionUNetPP(nn.Module):
    """3D U-Net++ for lesion segmentation on the (1, 1, 2.5) mm grid.

    stem: 3x3x3 conv, stride (1, 2, 2) (z, y, x) -> X^{0,0} works at 2 x 2 x 2.5 mm; backbone X^{i,0}, i = 0..depth,
    with 2x2x2 max-pooling between levels; nested nodes X^{i,j} = H([X^{i,0..j-1}, Up(X^{i+1,j-1})]) (dense skip
    pathways); deep-supervision heads (1x1x1 conv) on X^{0,1..depth}; the final head: Up_(1,2,2)(X^{0,depth}) concatenated
    with the input CT, one 3x3x3 conv-BN-ReLU at full resolution, 1x1x1 conv. Training returns the logits of all heads
    (deep-supervision heads upsampled to full resolution) — the final head last; eval returns sigmoid(final head).
    Total stride: z 2^depth, y/x 2^(depth+1) — 4 and 8 for depth 2, so any z, y, x that are multiples of 8 work.
    """

    def __init__(self, in_ch=1, base=8, depth=2, stem_stride=(1, 2, 2)):
        super().__init__()
        self.depth = depth
        self.stem_stride = tuple(float(s) for s in stem_stride)
        ch = [base * 2 ** i for i in range(depth + 1)]
        self.ch = ch
        self.stem = nn.Sequential(nn.Conv3d(in_ch, ch[0], 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool3d(2)
        # nodes['i_j'] = X^{i,j}: i = level (0 = the stem's resolution), j = position along the skip pathway.
        self.nodes = nn.ModuleDict()
        for i in range(depth + 1):
            self.nodes[f'{i}_0'] = ConvBlock(ch[0] if i == 0 else ch[i - 1], ch[i])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                self.nodes[f'{i}_{j}'] = NestedBlock(ch[i] * j + ch[i + 1], ch[i])
        self.heads = nn.ModuleList([nn.Conv3d(ch[0], 1, 1) for _ in range(depth)])
        self.refine = nn.Sequential(nn.Conv3d(ch[0] + in_ch, ch[0], 3, padding=1, bias=False),
                                    nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True))
        self.final = nn.Conv3d(ch[0], 1, 1)
        for head in [*self.heads, self.final]:
            nn.init.constant_(head.bias, -2.0)  # start near the lesion prior (most voxels are not lesion)

    @staticmethod
    def up(x):
        return F.interpolate(x, scale_factor=2.0, mode='nearest')

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
        top = F.interpolate(X[(0, self.depth)], scale_factor=self.stem_stride, mode='nearest')
        out = self.final(self.refine(torch.cat([top, x], dim=1)))
        if self.training:
            ds = [F.interpolate(self.heads[j - 1](X[(0, j)]), scale_factor=self.stem_stride, mode='nearest')
                  for j in range(1, self.depth + 1)]
            return ds + [out]
        return torch.sigmoid(out)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm3d(cout)
        self.c2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm3d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class CovidResNet(nn.Module):
    def __init__(self, in_ch=2, widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_ch, widths[0], 3, stride=(1, 2, 2), padding=1, bias=False),
                                  nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        layers = []
        cin = widths[0]
        for li, (w, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(BasicBlock(cin, w, 2 if (b == 0 and li > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * cin, 1)

    def forward(self, x):
        h = self.layers(self.stem(x))
        # Global average and global max pooling, concatenated: lesions fill a small part of the lungs, and the
        # max keeps a small finding's response from being diluted by the average.
        h = torch.cat([torch.flatten(F.adaptive_avg_pool3d(h, 1), 1), torch.flatten(F.adaptive_max_pool3d(h, 1), 1)], 1)
        logit = self.fc(self.dropout(h))
        if self.training:
            return logit
        return torch.sigmoid(logit)


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def load_nets(ckpt_dir):
    """LesionUNetPP and CovidResNet with the weights in ckpt_dir (seg.pt, cls.pt), in eval mode."""
    import os
    seg = LesionUNetPP()
    seg.load_state_dict(torch.load(os.path.join(ckpt_dir, 'seg.pt')))
    seg.eval()
    cls = CovidResNet()
    cls.load_state_dict(torch.load(os.path.join(ckpt_dir, 'cls.pt')))
    cls.eval()
    return seg, cls


# ---------------------------------------------------------------------------------------------------------------
# Slice-wise networks (version 0.2): trained on real 2-D COVID-19 slices, run on every axial slice of the service's
# (1, 1, 2.5) mm grid. They are written with Conv3d kernels (1, k, k) and poolings (1, 2, 2), so the exported ONNX
# keeps the manifest's NCDHW contract (the service tiles volumes as before) while no weight mixes slices: a slice's
# output depends on that slice alone, exactly as in training.
# ---------------------------------------------------------------------------------------------------------------

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
