"""Each fused module equals the diffusers module it replaces (fp32, eval, tiny live configs).

Every instance of every replaced class in the three tiny UNets is compared on random inputs of
the shapes its UNet feeds it (B = 2 videos of F = 5 frames, 6×6 pixels). Tolerance: the fused
path computes the same sums in another order (fused q/k/v GEMM, fp64 group-norm statistics, the
kernel's softmax), so outputs agree to float32 rounding: atol 2e-5, rtol 1e-5 on outputs of
magnitude ~1 (the largest difference measured is ~2e-6).
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention import FeedForward, TemporalBasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D, SpatioTemporalResBlock, TemporalConvLayer
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModel,
)
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from vdengine.adapters.diffusers.layers import (
    FusedFeedForward,
    FusedGroupNorm,
    FusedResnetBlock2D,
    FusedSpatialBlock,
    FusedSpatioTemporalResBlock,
    FusedSpatioTemporalTransformer,
    FusedTemporalBasicBlock,
    FusedTemporalConvLayer,
    FusedTemporalTransformer,
)

B, F, H, W = 2, 5, 6, 6
TOL = {"atol": 2e-5, "rtol": 1e-5}


def instances(model: nn.Module, cls: type) -> list[nn.Module]:
    found = [m for m in model.modules() if type(m) is cls]
    assert found, f"the tiny model has no {cls.__name__}"
    return found


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


# ---- temporal transformers -------------------------------------------------------------------------


@pytest.mark.parametrize("family,cls", [("unet3d", TransformerTemporalModel),
                                        ("motion", AnimateDiffTransformer3D)])
def test_temporal_transformer(family, cls, tiny_unets):
    for i, module in enumerate(instances(tiny_unets[family], cls)):
        fused = FusedTemporalTransformer(module)
        x = randn(B * F, module.in_channels, H, W, seed=i)
        expected = module(x, num_frames=F)
        got = fused(x, num_frames=F)
        if cls is TransformerTemporalModel:
            expected, got = expected.sample, got.sample
            torch.testing.assert_close(fused(x, num_frames=F, return_dict=False)[0], got)
        assert got.shape == x.shape and got.is_contiguous()
        assert (expected - x).abs().max() > 0.1  # the branch is live
        torch.testing.assert_close(got, expected, **TOL)


def test_animatediff_frames_beyond_max_seq_length(tiny_unets):
    module = instances(tiny_unets["motion"], AnimateDiffTransformer3D)[0]
    fused = FusedTemporalTransformer(module)
    frames = 9  # the tiny motion modules' max_seq_length is 8 (diffusers fails with a shape error)
    with pytest.raises(ValueError, match="num_frames = 9 exceeds the motion module's "
                                         "max_seq_length 8"):
        fused(randn(frames, module.in_channels, H, W), num_frames=frames)


def test_temporal_transformer_refuses_encoder_hidden_states(tiny_unets):
    module = instances(tiny_unets["unet3d"], TransformerTemporalModel)[0]
    with pytest.raises(ValueError, match="self-attention over frames only"):
        FusedTemporalTransformer(module)(randn(B * F, module.in_channels, H, W),
                                         encoder_hidden_states=randn(B * F, 3, 16), num_frames=F)


@pytest.mark.parametrize("context_len", [1, 3])
def test_spatio_temporal_transformer(context_len, tiny_unets):
    model = tiny_unets["svd"]
    for i, module in enumerate(instances(model, TransformerSpatioTemporalModel)):
        fused = FusedSpatioTemporalTransformer(module)
        x = randn(B * F, module.in_channels, H, W, seed=i)
        # SVD repeats the per-video context over frames before its blocks see it
        ehs = randn(B, context_len, 32, seed=10 + i).repeat_interleave(F, dim=0)
        indicator = torch.zeros(B, F)
        expected = module(x, ehs, image_only_indicator=indicator).sample
        got = fused(x, ehs, image_only_indicator=indicator).sample
        assert (expected - x).abs().max() > 0.1
        torch.testing.assert_close(got, expected, **TOL)


def test_spatio_temporal_image_only_frames(tiny_unets):
    """image_only_indicator = 1 turns the temporal mix off for those frames (alpha = 1)."""
    module = instances(tiny_unets["svd"], TransformerSpatioTemporalModel)[0]
    fused = FusedSpatioTemporalTransformer(module)
    x = randn(B * F, module.in_channels, H, W)
    ehs = randn(B * F, 1, 32)
    indicator = torch.tensor([[0.0, 1, 0, 1, 1], [1, 0, 0, 0, 1]])
    torch.testing.assert_close(fused(x, ehs, indicator).sample, module(x, ehs, indicator).sample,
                               **TOL)


@pytest.mark.parametrize("context_len", [1, 4])
def test_temporal_basic_block(context_len, tiny_unets):
    for i, block in enumerate(instances(tiny_unets["svd"], TemporalBasicTransformerBlock)):
        fused = FusedTemporalBasicBlock(block)
        s, c = H * W, block.norm_in.normalized_shape[0]
        x = randn(B * F, s, c, seed=i)
        context = randn(B, context_len, 32, seed=20 + i)
        time_context = context[:, None].expand(B, s, context_len, 32).reshape(B * s,
                                                                               context_len, 32)
        expected = block(x, F, encoder_hidden_states=time_context)
        torch.testing.assert_close(fused(x, F, context), expected, **TOL)


# ---- resnets, temporal convolutions, norms ----------------------------------------------------------


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_resnet_block(family, tiny_unets):
    for i, block in enumerate(instances(tiny_unets[family], ResnetBlock2D)):
        fused = FusedResnetBlock2D(block)
        n = B * F
        x = randn(n, block.in_channels, H, W, seed=i)
        temb = randn(n, block.time_emb_proj.in_features, seed=30 + i)
        torch.testing.assert_close(fused(x, temb), block(x, temb), **TOL)


def test_temporal_conv_layer(tiny_unets):
    for i, layer in enumerate(instances(tiny_unets["unet3d"], TemporalConvLayer)):
        fused = FusedTemporalConvLayer(layer)
        x = randn(B * F, layer.in_dim, H, W, seed=i)
        expected = layer(x, num_frames=F)
        got = fused(x, num_frames=F)
        assert got.is_contiguous()
        assert (expected - x).abs().max() > 0.1  # conv4 re-randomised: the branch is live
        torch.testing.assert_close(got, expected, **TOL)


def test_spatio_temporal_res_block(tiny_unets):
    for i, block in enumerate(instances(tiny_unets["svd"], SpatioTemporalResBlock)):
        fused = FusedSpatioTemporalResBlock(block)
        x = randn(B * F, block.spatial_res_block.in_channels, H, W, seed=i)
        temb = randn(B * F, block.spatial_res_block.time_emb_proj.in_features, seed=40 + i)
        indicator = torch.tensor([[0.0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
        got = fused(x, temb, indicator)
        assert got.is_contiguous()
        torch.testing.assert_close(got, block(x, temb, indicator), **TOL)


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_feed_forward(family, tiny_unets):
    for i, ff in enumerate(instances(tiny_unets[family], FeedForward)):
        fused = FusedFeedForward(ff)
        x = randn(B * F, 7, ff.net[0].proj.in_features, seed=i) * 2
        torch.testing.assert_close(fused(x), ff(x), **TOL)
        assert fused.fallbacks == 0


def spatial_blocks(model: nn.Module) -> list[nn.Module]:
    """The BasicTransformerBlocks of the spatial transformers (not the temporal ones)."""
    found = [b for m in model.modules()
             if isinstance(m, (Transformer2DModel, TransformerSpatioTemporalModel))
             for b in m.transformer_blocks]
    assert found, "the tiny model has no spatial transformer block"
    return found


@pytest.mark.parametrize("family", ["unet3d", "motion", "svd"])
def test_spatial_block(family, tiny_unets):
    for i, block in enumerate(spatial_blocks(tiny_unets[family])):
        fused = FusedSpatialBlock(block)
        c = block.norm1.normalized_shape[0]
        x = randn(B * F, H * W, c, seed=i)
        ehs = randn(B * F, 7, block.attn2.to_k.in_features, seed=50 + i)
        torch.testing.assert_close(fused(x, encoder_hidden_states=ehs),
                                   block(x, encoder_hidden_states=ehs), **TOL)
        assert fused.fallbacks == 0


def test_spatial_block_with_a_mask_runs_the_original(tiny_unets):
    block = spatial_blocks(tiny_unets["unet3d"])[0]
    fused = FusedSpatialBlock(block)
    x = randn(2, H * W, block.norm1.normalized_shape[0])
    ehs = randn(2, 7, block.attn2.to_k.in_features)
    mask = torch.ones(2, 7)
    mask[:, 5:] = 0
    torch.testing.assert_close(fused(x, encoder_hidden_states=ehs, encoder_attention_mask=mask),
                               block(x, encoder_hidden_states=ehs, encoder_attention_mask=mask))
    assert fused.fallbacks == 1


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("layout", ["4d", "5d_frame_major", "5d_contiguous", "3d"])
def test_group_norm_module(layout, silu):
    norm = nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + randn(8, seed=1) * 0.2)
        norm.bias.copy_(randn(8, seed=2) * 0.2)
    if layout == "4d":
        x = randn(6, 8, 5, 3)
    elif layout == "5d_frame_major":  # what the temporal layers pass: a view of [B, F, C, H, W]
        x = randn(B, F, 8, 3, 4).permute(0, 2, 1, 3, 4)
    elif layout == "5d_contiguous":
        x = randn(B, 8, F, 3, 4)
    else:
        x = randn(6, 8, 7)
    expected = norm(x)
    if silu:
        expected = torch.nn.functional.silu(expected)
    fused = FusedGroupNorm(norm, silu=silu)
    got = fused(x)
    assert got.shape == x.shape
    if layout == "5d_frame_major":  # returned as the same kind of view: no copy back
        assert got.permute(0, 2, 1, 3, 4).is_contiguous()
    torch.testing.assert_close(got, expected, **TOL)
    assert fused.fallbacks == 0


# ---- PyTorch fallbacks -------------------------------------------------------------------------------


def test_float64_runs_the_counted_pytorch_fallback(tiny_unets):
    """The CPU kernels are float32: float64 modules run the PyTorch path, count it, and agree."""
    module = instances(tiny_unets["unet3d"], TransformerTemporalModel)[0]
    import copy

    module = copy.deepcopy(module).double()
    fused = FusedTemporalTransformer(module)
    x = randn(B * F, module.in_channels, H, W).double()
    torch.testing.assert_close(fused(x, num_frames=F).sample, module(x, num_frames=F).sample,
                               atol=1e-10, rtol=1e-10)
    fallbacks = fused.fallbacks + sum(m.fallbacks for m in fused.modules()
                                      if hasattr(m, "fallbacks") and m is not fused)
    assert fallbacks == 1 + 2 * len(fused.transformer_blocks)  # the norm and both attentions
