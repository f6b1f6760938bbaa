"""LabelEmbLoss / LabelEmbedding / BaselineLoss against SPEC §1.

The reference here is a *literal* autograd transcription of SPEC §1's five formulas
(``spec_terms``), independent of the package's hand-written backward.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import grads_of, reaches, spec_terms, zero_or_none
from labelemb.embedding import LabelEmbedding, LabelEmbLoss
from labelemb.modes.baseline import BaselineLoss
from labelemb.models import build_model


# ----------------------------------------------------------------------------- reference
def spec_total(terms, beta=0.5):
    return (beta * terms["o1_y"] + (1 - beta) * terms["o1_emb"] + terms["o2_y"] + terms["emb_o2"]
            + terms["re"])


# ----------------------------------------------------------------------------- hand example
def _lse(z):
    return math.log(sum(math.exp(v) for v in z))


def _softmax(z):
    s = sum(math.exp(v) for v in z)
    return [math.exp(v) / s for v in z]


def test_hand_computed_example():
    # n = 3 classes, B = 2 samples, tau = 2, alpha = 0.9, beta = 0.5
    o1 = [[2.0, 1.0, 0.0], [0.5, 0.0, 1.0]]
    o2 = [[3.0, 0.0, 0.0], [1.0, 2.0, 0.0]]  # sample 0: argmax 0 == y (correct, p_y = 0.909 > alpha)
    e = [[1.0, 0.5, -0.5], [0.0, 0.2, 1.5]]  # sample 1: argmax 1 != y = 2 (wrong, masked out)
    y = [0, 2]

    # L_o1_y = mean(lse(o1_i) - o1_i[y_i])
    l_o1_y = ((_lse(o1[0]) - 2.0) + (_lse(o1[1]) - 1.0)) / 2
    # L_o1_emb = mean(sum_j softmax(e_i)_j * (lse(o1_i) - o1_ij))
    l_o1_emb = sum(sum(s * (_lse(o1[i]) - o1[i][j]) for j, s in enumerate(_softmax(e[i]))) for i in range(2)) / 2
    # L_o2_y = mean(lse(o2_i) - o2_i[y_i])
    l_o2_y = ((math.log(math.exp(3) + 2) - 3.0) + (math.log(math.e + math.e ** 2 + 1) - 0.0)) / 2
    # L_emb_o2: only sample 0 counts; q = softmax(o2_0 / 2) = softmax([1.5, 0, 0])
    q = [math.exp(1.5) / (math.exp(1.5) + 2), 1 / (math.exp(1.5) + 2), 1 / (math.exp(1.5) + 2)]
    l_emb_o2 = sum(q[j] * (_lse(e[0]) - e[0][j]) for j in range(3)) / (1 + 1e-8)
    # L_re = sum relu(p_y - 0.9): sample 0 has p_y = e^3 / (e^3 + 2) = 0.9094, sample 1 p_y = 0.09
    l_re = (math.exp(3) / (math.exp(3) + 2) - 0.9) + 0.0
    expected = 0.5 * l_o1_y + 0.5 * l_o1_emb + l_o2_y + l_emb_o2 + l_re
    assert expected == pytest.approx(2.92538977, abs=1e-6)  # the same number, written out

    got = LabelEmbLoss(tau=2.0, alpha=0.9, beta=0.5)(torch.tensor(o1), torch.tensor(y), torch.tensor(o2),
                                                     torch.tensor(e))
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # and the transcription agrees with the hand computation, term by term
    t = spec_terms(torch.tensor(o1, dtype=torch.float64), torch.tensor(o2, dtype=torch.float64),
                   torch.tensor(e, dtype=torch.float64), torch.tensor(y))
    for k, v in {"o1_y": l_o1_y, "o1_emb": l_o1_emb, "o2_y": l_o2_y, "emb_o2": l_emb_o2, "re": l_re}.items():
        assert t[k].item() == pytest.approx(v, abs=1e-12), k


# ----------------------------------------------------------------------------- random tensors
def _random_case(seed, b, n, correct, o2_scale=1.0):
    """o1, o2, e, y with ``correct`` a bool list: head 2's argmax equals y exactly there."""
    g = torch.Generator().manual_seed(seed)
    o1 = torch.randn(b, n, generator=g) * 2
    o2 = torch.randn(b, n, generator=g) * o2_scale
    e = torch.eye(n)[torch.randint(0, n, (b,), generator=g)] + 0.5 * torch.randn(b, n, generator=g)
    am = o2.argmax(dim=1)
    wrong = (am + 1 + torch.randint(0, n - 1, (b,), generator=g)) % n  # any class but the argmax
    y = torch.where(torch.tensor(correct), am, wrong)
    return o1, o2, e, y


CASES = [  # (seed, B, n, correct per sample, scale of o2, tau, alpha, beta)
    (0, 6, 5, [True, False, True, False, False, True], 1.0, 2.0, 0.9, 0.5),
    (1, 8, 10, [True] * 3 + [False] * 5, 6.0, 2.0, 0.9, 0.5),  # large o2: p_y > alpha for correct ones
    (2, 5, 4, [False] * 5, 1.0, 2.0, 0.9, 0.5),  # no sample correct: the mask is all zero
    (3, 7, 3, [True] * 7, 5.0, 1.0, 0.6, 0.0),  # all correct, beta = 0
    (4, 4, 7, [False, True, False, True], 4.0, 3.0, 1.0, 1.0),  # alpha = 1 (L_re never active), beta = 1
    (5, 16, 100, [i % 3 == 0 for i in range(16)], 8.0, 2.0, 0.5, 0.3),
]


@pytest.mark.parametrize("seed,b,n,correct,scale,tau,alpha,beta", CASES)
def test_loss_value_and_grads_match_spec_transcription(seed, b, n, correct, scale, tau, alpha, beta):
    o1, o2, e, y = _random_case(seed, b, n, correct, scale)
    m = (o2.argmax(1) == y)
    assert m.tolist() == correct
    p_y = o2.softmax(1).gather(1, y[:, None]).squeeze(1)
    if seed == 1:  # the case is meant to exercise L_re on some samples and not others
        assert (p_y > alpha).any() and not (p_y > alpha).all()

    inputs = [t.clone().double().requires_grad_() for t in (o1, o2, e)]
    ref = spec_total(spec_terms(*inputs, y, tau=tau, alpha=alpha), beta=beta)
    ref_grads = torch.autograd.grad(ref, inputs, allow_unused=True)

    got_inputs = [t.clone().requires_grad_() for t in (o1, o2, e)]
    got = LabelEmbLoss(tau=tau, alpha=alpha, beta=beta)(got_inputs[0], y, got_inputs[1], got_inputs[2])
    got_grads = torch.autograd.grad(got, got_inputs)

    assert got.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    for name, g_ref, g_got in zip(("o1", "o2", "e"), ref_grads, got_grads):
        g_ref = torch.zeros_like(g_got, dtype=torch.float64) if g_ref is None else g_ref
        torch.testing.assert_close(g_got.double(), g_ref, rtol=1e-4, atol=1e-6, msg=f"grad wrt {name}")
    if not any(correct):  # empty mask: E learns nothing, and L_emb_o2 contributes 0 to the value
        assert torch.count_nonzero(got_grads[2]) == 0
    else:
        assert torch.count_nonzero(got_grads[2]) > 0


def test_grad_scales_with_upstream_gradient():
    o1, o2, e, y = _random_case(7, 4, 5, [True, False, True, False], 3.0)
    ins = [t.clone().requires_grad_() for t in (o1, o2, e)]
    loss = LabelEmbLoss()(ins[0], y, ins[1], ins[2])
    g1 = torch.autograd.grad(loss, ins, retain_graph=True)
    g3 = torch.autograd.grad(3.0 * loss, ins)
    for a, b in zip(g1, g3):
        torch.testing.assert_close(b, 3.0 * a)


def test_loss_is_finite_for_bf16_inputs():
    o1, o2, e, y = _random_case(8, 6, 10, [True, False] * 3, 3.0)
    ins = [t.to(torch.bfloat16).requires_grad_() for t in (o1, o2, e)]
    loss = LabelEmbLoss()(ins[0], y, ins[1], ins[2])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # computed in float on the bf16 values
    ref = spec_total(spec_terms(*(t.detach().float() for t in ins), y))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    for t in ins:
        assert t.grad is not None and t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all()
    base = BaselineLoss()(ins[0], y)
    assert base.dtype == torch.float32 and torch.isfinite(base)


def test_baseline_equals_cross_entropy():
    g = torch.Generator().manual_seed(0)
    o1 = torch.randn(9, 10, generator=g, requires_grad=True)
    y = torch.randint(0, 10, (9,), generator=g)
    loss = BaselineLoss()(o1, y, torch.randn(9, 10), torch.randn(9, 10))  # extra args are ignored
    ref = F.cross_entropy(o1, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    (ga,) = torch.autograd.grad(loss, o1)
    (gb,) = torch.autograd.grad(ref, o1)
    torch.testing.assert_close(ga, gb)
    # and it is L_o1_y of the transcription
    assert loss.item() == pytest.approx(spec_terms(o1, o1, o1, y)["o1_y"].item(), rel=1e-6)


# ----------------------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize("kw", [dict(tau=0.0), dict(tau=-1.0), dict(tau=float("nan")),
                                dict(alpha=0.0), dict(alpha=-0.1), dict(alpha=1.0001), dict(alpha=float("nan")),
                                dict(beta=-0.01), dict(beta=1.01), dict(beta=float("nan"))])
def test_bad_hyperparameters_raise(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        LabelEmbLoss(**kw)


@pytest.mark.parametrize("kw", [dict(alpha=1.0), dict(beta=0.0), dict(beta=1.0), dict(tau=1e-3),
                                dict(alpha=1e-6), dict()])
def test_boundary_hyperparameters_accepted(kw):
    loss = LabelEmbLoss(**kw)
    expect = dict(tau=2.0, alpha=0.9, beta=0.5) | kw
    assert (loss.tau, loss.alpha, loss.beta) == (expect["tau"], expect["alpha"], expect["beta"])


def test_defaults_are_the_papers():
    loss = LabelEmbLoss()
    assert (loss.tau, loss.alpha, loss.beta) == (2.0, 0.9, 0.5)


# ----------------------------------------------------------------------------- LabelEmbedding
def test_label_embedding_init_and_soft_targets():
    emb = LabelEmbedding(16, 7)
    assert torch.equal(emb.weight.detach(), torch.eye(7))
    assert emb.weight.requires_grad
    st = emb.soft_targets()
    torch.testing.assert_close(st.sum(dim=1), torch.ones(7))
    # identity -> each row puts e/(e + 6) on its own label
    assert torch.allclose(st.diagonal(), torch.full((7,), math.e / (math.e + 6)))
    with torch.no_grad():
        emb.weight.normal_()
    torch.testing.assert_close(emb.soft_targets().sum(dim=1), torch.ones(7))
    assert (emb.soft_targets() > 0).all()


def test_label_embedding_forward_rows_and_detached_head():
    emb = LabelEmbedding(4, 5)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(25.0).view(5, 5))
    h = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([4, 0, 2])
    o2, e = emb(h, y)
    assert o2.shape == (3, 5) and e.shape == (3, 5)
    torch.testing.assert_close(e, emb.weight[y])
    torch.testing.assert_close(o2, h @ emb.head.weight.T + emb.head.bias)
    (o2.sum() + e.sum()).backward()
    assert h.grad is None  # head 2 sees detached features


def test_label_embedding_validates_sizes():
    with pytest.raises(ValueError):
        LabelEmbedding(0, 10)
    with pytest.raises(ValueError):
        LabelEmbedding(10, 1)


# ----------------------------------------------------------------------------- gradient routing
def _groups(model):
    return {"backbone": list(model.backbone.parameters()), "head1": list(model.head.parameters()),
            "head2": list(model.emb.head.parameters()), "E": [model.emb.weight]}


def _grads(loss, model):
    """{group: list of grads (None where no gradient reaches the parameter)}."""
    return grads_of(loss, _groups(model))


@pytest.fixture(scope="module")
def _mlp_template():
    torch.manual_seed(0)
    return build_model("mlp", 10, 1, 28)


@pytest.fixture
def mlp_batch(_mlp_template):
    """The real MLP network and a batch where head 2 is right on some samples and wrong on others."""
    model = copy.deepcopy(_mlp_template)  # tests may change it
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 28, 28, generator=g)
    with torch.no_grad():
        o2 = model.emb.head(model.backbone(x))
    am = o2.argmax(1)
    y = torch.where(torch.arange(8) % 2 == 0, am, (am + 3) % 10)  # even samples correct, odd wrong
    return model, x, y


ROUTES = {  # SPEC §1's table: term -> groups its gradient reaches
    "o1_y": {"backbone", "head1"},
    "o1_emb": {"backbone", "head1"},
    "o2_y": {"head2"},
    "emb_o2": {"E"},
    "re": {"head2"},
}


def test_each_term_reaches_exactly_the_specs_parameters(mlp_batch):
    model, x, y = mlp_batch
    o1, o2, e = model(x, y)
    # alpha = 0.05 so that L_re is active (the narrow-initialised head gives p_y ~ 0.1)
    terms = spec_terms(o1, o2, e, y, alpha=0.05)
    assert terms["re"].item() > 0 and terms["emb_o2"].item() > 0
    for name, term in terms.items():
        gs = _grads(term, model)
        for group, g in gs.items():
            if group in ROUTES[name]:
                assert reaches(g), f"{name} should reach {group}"
            else:
                assert zero_or_none(g), f"{name} must not reach {group}"


@pytest.mark.parametrize("beta,alpha", [(0.5, 0.9), (0.0, 0.05), (1.0, 0.05), (0.3, 0.05)])
def test_real_loss_routes_gradients_like_the_spec(mlp_batch, beta, alpha):
    model, x, y = mlp_batch
    o1, o2, e = model(x, y)
    terms = spec_terms(o1, o2, e, y, alpha=alpha)
    real = _grads(LabelEmbLoss(alpha=alpha, beta=beta)(o1, y, o2, e), model)
    head1_part = _grads(beta * terms["o1_y"] + (1 - beta) * terms["o1_emb"], model)
    head2_part = _grads(terms["o2_y"] + terms["re"], model)
    emb_part = _grads(terms["emb_o2"], model)

    def same(a, b):  # lists of grads; None (no gradient) counts as zeros
        for ga, gb in zip(a, b):
            if ga is None and gb is None:
                continue
            ga = torch.zeros_like(gb) if ga is None else ga
            gb = torch.zeros_like(ga) if gb is None else gb
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7)

    # E's gradient is exactly that of L_emb_o2 alone (L_o1_emb sends nothing into E)
    same(real["E"], emb_part["E"])
    assert reaches(real["E"])
    # backbone and head 1 only see the head-1 terms (head 2 sends nothing into the backbone)
    same(real["backbone"], head1_part["backbone"])
    same(real["head1"], head1_part["head1"])
    # head 2 learns from L_o2_y + L_re only
    same(real["head2"], head2_part["head2"])


def test_head2_sends_nothing_into_backbone(mlp_batch):
    model, x, y = mlp_batch
    _, o2, e = model(x, y)
    gs = _grads(o2.square().sum() + e.sum(), model)
    assert all(g is None for g in gs["backbone"]) and all(g is None for g in gs["head1"])
    assert reaches(gs["head2"]) and reaches(gs["E"])


def test_l_o1_emb_sends_nothing_into_E_in_the_real_loss(mlp_batch):
    model, x, _ = mlp_batch
    with torch.no_grad():
        o2 = model.emb.head(model.backbone(x))
    y = (o2.argmax(1) + 1) % 10  # head 2 wrong everywhere: L_emb_o2 has an empty mask
    with torch.no_grad():
        model.emb.weight.normal_()  # soft targets far from one-hot, so L_o1_emb is large
    o1, o2, e = model(x, y)
    for beta in (0.0, 0.5):
        gs = _grads(LabelEmbLoss(beta=beta)(o1, y, o2, e), model)
        assert zero_or_none(gs["E"])
        assert reaches(gs["backbone"]) and reaches(gs["head1"]) and reaches(gs["head2"])


def test_baseline_leaves_head2_and_E_untouched(mlp_batch):
    model, x, y = mlp_batch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        o1, o2, e = model(x, y)
        BaselineLoss()(o1, y, o2, e).backward()
        assert model.emb.weight.grad is None
        assert model.emb.head.weight.grad is None and model.emb.head.bias.grad is None
        assert model.head.weight.grad is not None and model.backbone.fc1.weight.grad is not None
        opt.step()
    after = model.state_dict()
    assert torch.equal(after["emb.weight"], torch.eye(10))  # E stays the identity
    assert torch.equal(after["emb.head.weight"], before["emb.head.weight"])
    assert torch.equal(after["emb.head.bias"], before["emb.head.bias"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["backbone.fc1.weight"], before["backbone.fc1.weight"])


def test_emb_mode_adam_step_moves_E_away_from_identity(mlp_batch):
    model, x, y = mlp_batch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    o1, o2, e = model(x, y)
    LabelEmbLoss()(o1, y, o2, e).backward()
    opt.step()
    w = model.emb.weight.detach()
    changed_rows = set(torch.nonzero((w - torch.eye(10)).abs().sum(1) > 0).flatten().tolist())
    # only the rows of labels where head 2 was right can move
    assert changed_rows and changed_rows <= set(y[0::2].tolist())
