"""The four backbones of SPEC §2 inside LabelEmbNet: shapes, sizes, parameter counts, gradients, init."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from labelemb.embedding import LabelEmbLoss
from conftest import run_script
from labelemb.models import LabelEmbNet, build_model

# arch -> (num_classes, in_channels, image_size, feature_dim, batch)
ARCHS = {
    "mlp": (10, 1, 28, 500, 4),
    "cnn": (10, 1, 28, 1024, 4),
    "resnet18": (100, 3, 32, 1024, 2),
    "resnet8": (10, 3, 32, 2048, 2),
}


# ----------------------------------------------------------------------------- counting by hand
def linear(i, o):
    return i * o + o


def conv(i, o, k, bias):
    return i * o * k * k + (o if bias else 0)


def bn(c):
    return 2 * c  # weight + bias (running stats are buffers, not parameters)


def resnet_params(blocks, widths, strides, feature_dim, n_classes, in_ch=3):
    """SPEC §2's ResNets: 3x3 stem (no bias) + BN; BasicBlocks of two 3x3 convs + BN, a 1x1 conv + BN
    projection where the shape changes; two linear heads; the n x n embedding."""
    total = conv(in_ch, widths[0], 3, False) + bn(widths[0])
    c = widths[0]
    for nb, w, s in zip(blocks, widths, strides):
        for i in range(nb):
            stride = s if i == 0 else 1
            total += conv(c, w, 3, False) + bn(w) + conv(w, w, 3, False) + bn(w)
            if stride != 1 or c != w:
                total += conv(c, w, 1, False) + bn(w)
            c = w
    return total + 2 * linear(feature_dim, n_classes) + n_classes * n_classes


EXPECTED_PARAMS = {
    # 784*500+500 + 500*500+500 + 2*(500*10+10) + 10*10
    "mlp": 653120,
    # 1*32*25+32 + 32*64*25+64 + 3136*1024+1024 + 2*(1024*10+10) + 10*10
    "cnn": 3284984,
    "resnet18": 44867672,
    "resnet8": 4932344,
}
EXPECTED_BACKBONE_PARAMS = {"mlp": 643000, "cnn": 3264384, "resnet18": 44652672, "resnet8": 4891264}


def test_hand_counts_agree_with_the_literals():
    assert linear(784, 500) + linear(500, 500) + 2 * linear(500, 10) + 100 == EXPECTED_PARAMS["mlp"]
    assert (conv(1, 32, 5, True) + conv(32, 64, 5, True) + linear(7 * 7 * 64, 1024) + 2 * linear(1024, 10) + 100
            == EXPECTED_PARAMS["cnn"])
    assert resnet_params([2, 2, 2, 2], [128, 256, 512, 1024], [1, 2, 2, 2], 1024, 100) == EXPECTED_PARAMS["resnet18"]
    assert resnet_params([1, 1, 1], [128, 256, 512], [1, 2, 2], 2048, 10) == EXPECTED_PARAMS["resnet8"]
    for arch, (n, *_rest) in ARCHS.items():
        feat = ARCHS[arch][3]
        assert EXPECTED_BACKBONE_PARAMS[arch] == EXPECTED_PARAMS[arch] - 2 * linear(feat, n) - n * n


# ----------------------------------------------------------------------------- one run per arch
_CACHE: dict = {}


def get_run(arch):
    """Build the model with seed 0 and run it once: forward(x) (no grad, one sample), forward(x, y0)
    and one backward of the emb-mode loss with labels y chosen so head 2 is right on sample 0 and
    wrong on the others (so E gets a gradient). No optimiser step: the parameters stay as built."""
    if arch in _CACHE:
        return _CACHE[arch]
    n, c, s, _, b = ARCHS[arch]
    torch.manual_seed(0)
    model = build_model(arch, n, c, s)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, c, s, s, generator=g)
    with torch.no_grad():
        o1_only = model(x[:1])
    y0 = torch.arange(b) % n
    feats = []
    hook = model.backbone.register_forward_hook(lambda mod, inp, out: feats.append(out.detach()))
    o1, o2, e0 = model(x, y0)
    hook.remove()
    am = o2.detach().argmax(1)
    y = torch.where(torch.arange(b) == 0, am, (am + 1) % n)
    e = model.emb.weight[y]  # o2 does not depend on the labels: this is what forward(x, y) returns
    LabelEmbLoss()(o1, y, o2, e).backward()
    _CACHE[arch] = r = dict(model=model, x=x, y0=y0, h=feats[0], o1_only=o1_only, o1=o1.detach(), o2=o2.detach(),
                            e0=e0.detach())
    return r


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    _CACHE.clear()


@pytest.fixture(params=list(ARCHS))
def run(request):
    return request.param, get_run(request.param)


def test_output_shapes(run):
    arch, r = run
    n, _, _, feat, b = ARCHS[arch]
    assert isinstance(r["o1_only"], torch.Tensor) and r["o1_only"].shape == (1, n)  # forward(x)
    assert r["o1"].shape == (b, n) and r["o2"].shape == (b, n) and r["e0"].shape == (b, n)  # forward(x, y)
    assert r["h"].shape == (b, feat)
    assert isinstance(r["model"], LabelEmbNet) and r["model"].num_classes == n
    # e is the embedding row of each label (E is the identity at start)
    torch.testing.assert_close(r["e0"], torch.eye(n)[r["y0"]])


def test_feature_dim(run):
    arch, r = run
    feat = ARCHS[arch][3]
    m = r["model"]
    assert m.backbone.feature_dim == feat
    assert m.head.in_features == feat and m.emb.head.in_features == feat


def test_parameter_counts(run):
    arch, r = run
    m = r["model"]
    assert sum(p.numel() for p in m.parameters()) == EXPECTED_PARAMS[arch]
    assert sum(p.numel() for p in m.backbone.parameters()) == EXPECTED_BACKBONE_PARAMS[arch]
    assert all(p.requires_grad for p in m.parameters())


def test_no_nans(run):
    _, r = run
    for k in ("o1_only", "o1", "o2", "e0", "h"):
        assert torch.isfinite(r[k]).all(), k


def test_every_parameter_gets_a_nonzero_gradient_in_emb_mode(run):
    _, r = run
    missing = [name for name, p in r["model"].named_parameters()
               if p.grad is None or torch.count_nonzero(p.grad) == 0 or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_embedding_is_identity_at_start(run):
    arch, r = run
    n = ARCHS[arch][0]
    assert torch.equal(r["model"].emb.weight.detach(), torch.eye(n))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])  # no BatchNorm: forward is deterministic
def test_head1_output_equals_forward_without_labels(arch):
    r = get_run(arch)
    with torch.no_grad():
        torch.testing.assert_close(r["model"](r["x"]), r["model"](r["x"], r["y0"])[0])
        torch.testing.assert_close(r["model"](r["x"][:1]), r["o1_only"])


# ----------------------------------------------------------------------------- initialisation
TRUNC2_STD = 0.8796  # std of a normal truncated at +-2 std, in units of sigma


def _check_trunc_normal(w, sigma, rel):
    w = w.detach()
    assert w.abs().max().item() <= 2 * sigma + 1e-7, f"outside +-2*{sigma}"
    assert w.std().item() == pytest.approx(TRUNC2_STD * sigma, rel=rel)
    assert w.mean().abs().item() < 0.1 * sigma
    assert w.abs().max().item() > 1.5 * sigma  # a truncated normal, not something narrower


@pytest.mark.parametrize("arch,backbone_layers,head_std", [
    ("mlp", ["fc1", "fc2"], 0.01),
    ("cnn", ["conv1", "conv2", "fc"], 0.001),
])
def test_tf_style_initialisation(arch, backbone_layers, head_std):
    m = get_run(arch)["model"]  # parameters as built with seed 0 (no optimiser step was taken)
    for name in backbone_layers:
        w = getattr(m.backbone, name).weight
        _check_trunc_normal(w, 0.1, rel=0.05 if w.numel() > 10000 else 0.12)
    for head in (m.head, m.emb.head):  # BOTH heads
        _check_trunc_normal(head.weight, head_std, rel=0.06)
    biases = {name: p for name, p in m.named_parameters() if name.endswith("bias")}
    assert len(biases) == len(backbone_layers) + 2
    for name, p in biases.items():
        assert torch.count_nonzero(p) == 0, name
    assert torch.equal(m.emb.weight.detach(), torch.eye(10))


@pytest.mark.parametrize("arch", ["resnet18", "resnet8"])
def test_resnet_convs_have_no_bias(arch):
    r = get_run(arch)
    convs = [mod for mod in r["model"].modules() if isinstance(mod, nn.Conv2d)]
    # resnet18: stem + 8 blocks * 2 + 3 projections; resnet8: stem + 3 * 2 + 2 projections
    assert len(convs) == {"resnet18": 20, "resnet8": 9}[arch]
    assert all(cv.bias is None for cv in convs)
    bns = [mod for mod in r["model"].modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == len(convs)


def test_mnist_convs_have_bias_and_same_padding():
    m = get_run("cnn")["model"]
    for cv, (i, o) in ((m.backbone.conv1, (1, 32)), (m.backbone.conv2, (32, 64))):
        assert (cv.in_channels, cv.out_channels, cv.kernel_size, cv.padding) == (i, o, (5, 5), (2, 2))
        assert cv.bias is not None


def _params(model):
    return {k: p.detach() for k, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet8"])
def test_same_seed_same_weights(arch):
    n, c, s, *_ = ARCHS[arch]
    torch.manual_seed(0)
    again = _params(build_model(arch, n, c, s))
    first = _params(get_run(arch)["model"])  # also built right after torch.manual_seed(0)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    if arch == "mlp":
        torch.manual_seed(1)
        other = _params(build_model(arch, n, c, s))
        assert not torch.equal(first["backbone.fc1.weight"], other["backbone.fc1.weight"])
        assert not torch.equal(first["head.weight"], other["head.weight"])


def test_unknown_arch_raises():
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50", 10)


# ----------------------------------------------------------------------------- BatchNorm as PyTorch 0.2 started it
def _bn_scales(model) -> torch.Tensor:
    return torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


def _bn_biases(model) -> torch.Tensor:
    return torch.cat([m.bias.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


@pytest.mark.parametrize("arch", ["resnet18", "resnet8"])
def test_resnet_batchnorm_scales_uniform_by_default(arch):
    w = _bn_scales(get_run(arch)["model"])  # the default build, seed 0
    assert (w >= 0).all() and (w < 1).all() and len(torch.unique(w)) > 0.99 * w.numel()
    assert w.mean().item() == pytest.approx(0.5, abs=0.02) and w.std().item() == pytest.approx(12 ** -0.5, rel=0.05)
    assert torch.count_nonzero(_bn_biases(get_run(arch)["model"])) == 0


def test_batchnorm_scales_follow_the_seed_and_leave_other_weights_alone():
    def build(seed, bn_init="uniform"):
        torch.manual_seed(seed)
        return build_model("resnet8", 10, 3, 32, bn_init=bn_init)

    a, b, c, ones = build(3), build(3), build(4), build(3, "ones")
    assert torch.equal(_bn_scales(a), _bn_scales(b)) and not torch.equal(_bn_scales(a), _bn_scales(c))
    assert torch.equal(_bn_scales(ones), torch.ones_like(_bn_scales(ones)))
    # the scales are drawn after every other weight: the rest is today's PyTorch model of the same seed
    pa, po = _params(a), _params(ones)
    assert all(torch.equal(pa[k], po[k]) for k in pa if not (k.endswith("weight") and _is_bn(a, k)))
    with pytest.raises(ValueError, match="bn_init"):
        build(0, "zeros")


def _is_bn(model, param_name: str) -> bool:
    return isinstance(model.get_submodule(param_name.rsplit(".", 1)[0]), nn.BatchNorm2d)


@pytest.mark.parametrize("argv,expected", [([], "uniform"), (["--bn-init", "ones"], "ones")])
def test_bn_init_flag_reaches_the_model(argv, expected, tmp_path, capsys):
    from labelemb.cli import build_parser, make_config
    from labelemb.config import RECIPES
    from labelemb.dataset import Dataset
    from labelemb.train import build

    recipe = RECIPES["cifar10"]
    cfg = make_config(recipe, build_parser(recipe).parse_args(["--data", str(tmp_path), *argv]), 0)
    assert cfg.bn_init == expected
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    data = Dataset("cifar10", [str(i) for i in range(10)], x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4))
    w = _bn_scales(build(cfg, data, torch.device("cpu")).model)
    if expected == "ones":
        assert torch.equal(w, torch.ones_like(w))
    else:
        assert (w < 1).all() and len(torch.unique(w)) > 1
    r = run_script("mlp.py", "--bn-init", "ones", "--results-dir", str(tmp_path / "r"), capsys=capsys)
    assert r.returncode == 2 and "--bn-init applies to the architectures with BatchNorm" in r.stderr  # MLP: none
    assert not (tmp_path / "r").exists()
