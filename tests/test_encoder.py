import copy

import pytest
import torch

from amdim_lib.core.encoder import Encoder, Features, ViewBatchNorm2d, count_parameters, views_in_batch

# (image_size, ndf, n_rkhs, n_depth, trainable parameters with use_bn=False), from DESIGN.md
PARAMETER_TABLE = [
    (32, 32, 256, 2, 1_147_776),
    (32, 128, 1024, 3, 20_033_024),
    (64, 128, 1024, 3, 57_748_992),
    (128, 192, 1536, 8, 208_419_264),
    (128, 320, 2560, 10, 665_747_520),
]


@pytest.mark.parametrize("image_size,ndf,n_rkhs,n_depth,expected", PARAMETER_TABLE)
def test_parameter_counts_match_the_paper_models(image_size, ndf, n_rkhs, n_depth, expected):
    with torch.device("meta"):  # counts only: no memory for the 666M-parameter model
        encoder = Encoder(image_size, ndf, n_rkhs, n_depth, use_bn=False)
    assert count_parameters(encoder) == expected


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("use_bn", [False, True])
def test_feature_shapes_and_every_parameter_is_used(image_size, use_bn):
    encoder = Encoder(image_size, ndf=8, n_rkhs=64, n_depth=2, use_bn=use_bn)
    feats = encoder(torch.randn(3, 3, image_size, image_size))
    assert isinstance(feats, Features)
    assert feats.r1.shape == (3, 64, 1, 1)
    assert feats.r5.shape == (3, 64, 5, 5)
    assert feats.r7.shape == (3, 64, 7, 7)
    # Zero-initialised branch outputs get no gradient from a first backward through a plain sum only in
    # their inputs; perturb them so that every parameter is on the gradient path.
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    feats = encoder(torch.randn(3, 3, image_size, image_size))
    (feats.r1.pow(2).sum() + feats.r5.pow(2).sum() + feats.r7.pow(2).sum()).backward()
    unused = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, f"parameters outside the forward pass: {unused}"


def test_fresh_residual_units_are_pooled_identities():
    from amdim_lib.core.encoder import ConvResNxN
    unit = ConvResNxN(4, 8, width=4, stride=2)
    x = torch.randn(2, 4, 30, 30)
    expected = torch.nn.functional.avg_pool2d(x, 4, 2)
    out = unit(x)
    assert torch.allclose(out[:, :4], expected, atol=1e-6)
    assert torch.all(out[:, 4:] == 0)


def test_local_heads_start_near_identity():
    from amdim_lib.core.encoder import LocalHead
    head = LocalHead(16, 32)
    w = head.shortcut.weight[:, :, 0, 0]
    assert torch.all(w[:16].diagonal() == 1)
    off_identity = w - torch.eye(32, 16)
    assert off_identity.abs().max() <= 0.01


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="32, 64, 128"):
        Encoder(48, 8, 64, 1)
    with pytest.raises(ValueError, match="n_rkhs >= 32"):
        Encoder(32, 8, 16, 1)
    encoder = Encoder(32, 8, 64, 1)
    with pytest.raises(ValueError, match="32x32"):
        encoder(torch.randn(1, 3, 64, 64))


def _two_views(shape):
    # Views from different distributions, so that normalising them together is visibly not per view.
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator), 1.0 + 3.0 * torch.randn(shape, generator=generator)


def test_view_batch_norm_is_two_separate_passes_in_one():
    x1, x2 = _two_views((5, 4, 3, 3))
    norm, separate = ViewBatchNorm2d(4), torch.nn.BatchNorm2d(4)
    with views_in_batch(norm, 2):
        out = norm(torch.cat([x1, x2]))
    assert norm.views == 1, "the view count holds for the context only"
    expected = torch.cat([separate(x1), separate(x2)])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(separate, name), rtol=0, atol=1e-7, msg=name)
    assert norm.num_batches_tracked == 2
    with views_in_batch(norm, 2), pytest.raises(ValueError, match="9 cannot be split into 2 views"):
        norm(torch.cat([x1, x2[:4]]))


@pytest.mark.parametrize("use_bn", [False, True])
def test_encoder_normalises_each_view_with_its_own_statistics(use_bn):
    encoder = Encoder(32, ndf=8, n_rkhs=64, n_depth=2, use_bn=use_bn).train()
    with torch.no_grad():  # non-zero residual branches: every r1 channel varies (BN weights stay 1, biases 0)
        for m in encoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(1)))
    separate, joint = copy.deepcopy(encoder), copy.deepcopy(encoder)
    x1, x2 = _two_views((6, 3, 32, 32))
    with torch.no_grad():
        with views_in_batch(encoder, 2):
            both = encoder(torch.cat([x1, x2]))
        alone = [separate(x) for x in (x1, x2)]
        together = joint(torch.cat([x1, x2]))
    for view, rows in enumerate((slice(0, 6), slice(6, None))):
        r1 = both.r1[rows].flatten(1)  # the last BN (weight 1, bias 0 when fresh) makes each view standard
        torch.testing.assert_close(r1.mean(0), torch.zeros(64), rtol=0, atol=1e-5)
        torch.testing.assert_close(r1.var(0, unbiased=False), torch.ones(64), rtol=0, atol=1e-3)
        assert together.r1[rows].flatten(1).mean(0).abs().max() > 0.1, "the joint pass must differ per view"
        for scale in Features._fields:
            torch.testing.assert_close(getattr(both, scale)[rows], getattr(alone[view], scale), rtol=0, atol=1e-4)
    buffers = dict(separate.named_buffers())
    for name, buffer in encoder.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=1e-6, msg=name)


def test_use_bn_normalises_the_7x7_features_that_r7_and_the_5x5_block_read():
    encoder = Encoder(32, ndf=8, n_rkhs=64, n_depth=1, use_bn=True).eval()
    with torch.no_grad():
        encoder.to_r7[-1].running_mean.fill_(5.0)  # a BN on the 7x7 features would subtract this
        x = torch.randn(2, 3, 32, 32)
        shifted = encoder(x)
        encoder.to_r7[-1].running_mean.zero_()
        plain = encoder(x)
    assert isinstance(encoder.to_r7[-1], torch.nn.BatchNorm2d)
    assert not torch.allclose(shifted.r7, plain.r7) and not torch.allclose(shifted.r5, plain.r5)
