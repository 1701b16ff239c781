"""Supernet shapes, dropping-path sampling, frozen sub-networks and probability exports."""

from __future__ import annotations

import json

import pytest
import torch

from densenas_core.spaces import get_space, space_from_dict
from densenas_core.supernet import ARCH_PARAM_NAMES, Sample, SuperNet

TINY = {
    "name": "tiny",
    "family": "mbv2",
    "input_size": 8,
    "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
    "stages": [
        {"stride": 2, "widths": [8, 12], "num_layers": 1},
        {"stride": 2, "widths": [16, 16], "num_layers": 2},
    ],
    "tail_channels": 24,
    "align_ops": ["mb_k3_e1", "mb_k5_e2", "mb_k3_e2"],
    "layer_ops": ["mb_k3_e1", "mb_k5_e1", "skip"],
    "max_connections": 3,
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name,res,batch",
    [
        ("mbv2-small", 32, 2),
        ("resnet-small", 32, 2),
        ("mbv2-imagenet", 64, 2),
        ("resnet-imagenet", 64, 2),
    ],
)
def test_forward_shapes_for_every_preset(name, res, batch):
    torch.manual_seed(0)
    net = SuperNet(name, num_classes=5, in_channels=3)
    space = get_space(name)
    s = space.summary()
    assert net.alpha_align.shape == (s["alignment_branches"], s["alignment_ops"])
    assert net.alpha_layer.shape == (s["basic_layers"], s["layer_ops"])
    assert int(net.beta_mask.sum()) == s["paths"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, res, res)
    with torch.no_grad():
        for sample in (net.sample(gen, uniform=True), net.sample(gen, k=2, arch=True)):
            assert net(x, sample).shape == (batch, 5)


def test_parameters_are_separated():
    net = SuperNet("mbv2-small", 10, in_channels=1)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert len(arch) == 3 and not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert all(n not in ARCH_PARAM_NAMES for n, p in net.named_parameters() if id(p) in weights)
    # BN has no affine parameters in the supernet
    assert all(not m.affine for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_init_scale_and_path_probabilities():
    net = SuperNet("mbv2-small", 10)
    assert net.alpha_align.abs().max() < 1e-2 and net.beta.abs().max() < 1e-2
    assert (net.beta[~net.beta_mask] == 0).all()
    p = net.path_probs()
    g = net.graph
    for i in range(g.beta_rows):
        ks = [k for k in range(len(g.paths)) if g.path_src[k] == i]
        assert float(p[ks].sum().detach()) == pytest.approx(1.0)


def test_sampling_is_deterministic_and_respects_k():
    net = SuperNet(space_from_dict(TINY), 4)
    a = net.sample(torch.Generator().manual_seed(5), k=2, arch=True)
    b = net.sample(torch.Generator().manual_seed(5), k=2, arch=True)
    assert torch.equal(a.align, b.align) and torch.equal(a.layers, b.layers)
    assert a.align.shape == (net.alpha_align.shape[0], 2)
    assert (a.align[:, 0] != a.align[:, 1]).all()  # without replacement
    with torch.no_grad():
        net.alpha_layer.zero_()
        net.alpha_layer[:, 2] = 30.0  # skip almost surely
    s = net.sample(torch.Generator().manual_seed(0))
    assert (s.layers[:, 0] == 2).all()
    u = [net.sample(torch.Generator().manual_seed(i), uniform=True).layers for i in range(30)]
    assert len({int(x) for t in u for x in t.flatten()}) == 3  # uniform ignores α


def test_only_sampled_ops_run_and_receive_gradients():
    torch.manual_seed(0)
    net = SuperNet(space_from_dict(TINY), 4, entangled=False)
    sample = net.sample(torch.Generator().manual_seed(1), k=2, arch=True)
    x = torch.randn(3, 3, 8, 8)
    net(x, sample).sum().backward()
    for r, row in enumerate(net.align):
        for o, op in enumerate(row):
            has = any(p.grad is not None for p in op.parameters())
            assert has == (o in sample.align[r].tolist())
    # gradients reach α only on the sampled entries (softmax over them), and β
    mask = torch.zeros_like(net.alpha_align, dtype=torch.bool).scatter_(1, sample.align, True)
    assert (net.alpha_align.grad[~mask] == 0).all() and net.alpha_align.grad[mask].abs().sum() > 0
    assert net.beta.grad.abs().sum() > 0


def test_weight_step_leaves_arch_parameters_out_of_the_graph():
    net = SuperNet(space_from_dict(TINY), 4)
    sample = net.sample(torch.Generator().manual_seed(1))
    net(torch.randn(2, 3, 8, 8), sample).sum().backward()
    assert all(p.grad is None for p in net.arch_parameters())


@pytest.mark.parametrize("entangled", [False, True])
@pytest.mark.parametrize("k,arch", [(1, False), (2, True)])
def test_frozen_subnetwork_equals_supernet(k, arch, entangled):
    torch.manual_seed(0)
    net = SuperNet("mbv2-small", 10, in_channels=1, entangled=entangled)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    sample = net.sample(torch.Generator().manual_seed(3), k=k, arch=arch)
    frozen = net.freeze(sample)
    x = torch.randn(2, 1, 16, 16)
    # a few train-mode passes give the BN layers non-trivial running statistics
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(4, 1, 16, 16), sample)
    net.eval()
    with torch.no_grad():
        a = net(x, sample)
        b = frozen(x)
    if arch:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    else:
        assert torch.equal(a, b)
    # same weights, no copies
    ids = {id(p) for p in net.parameters()}
    assert all(id(p) in ids for p in frozen.parameters())
    n_frozen = sum(p.numel() for p in frozen.parameters())
    if not entangled:  # entangled ops all hold their row's whole kernel
        assert n_frozen < sum(p.numel() for p in net.weight_parameters())


def test_export_probs_is_json_and_normalised():
    net = SuperNet("mbv2-small", 10)
    probs = json.loads(json.dumps(net.export_probs()))
    g = net.graph
    assert len(probs["alpha"]["align"]) == len(g.align_paths)
    assert len(probs["alpha"]["layers"]) == len(g.layer_block)
    assert len(probs["beta"]) == g.beta_rows
    for row in probs["alpha"]["align"] + probs["alpha"]["layers"] + probs["beta"]:
        assert sum(row["probs"]) == pytest.approx(1.0, abs=1e-5)


def test_arch_lists_round_trip():
    a = SuperNet("mbv2-small", 10)
    with torch.no_grad():
        for p in a.arch_parameters():
            p.normal_()
    b = SuperNet("mbv2-small", 10)
    b.load_arch_lists(a.alpha_lists(), a.beta_lists())
    assert torch.equal(a.alpha_align, b.alpha_align) and torch.equal(a.alpha_layer, b.alpha_layer)
    assert torch.equal(a.beta[a.beta_mask], b.beta[b.beta_mask])
    assert a.export() == b.export()


def test_argmax_sample_is_the_default_forward():
    net = SuperNet(space_from_dict(TINY), 4).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, net.argmax_sample()))
    assert isinstance(net.argmax_sample(), Sample)
