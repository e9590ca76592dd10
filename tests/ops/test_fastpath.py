"""The fused ops' eager fast path: a call signature is validated once, then goes straight to the
kernel — with the same results, and every bad call still refused."""

from __future__ import annotations

import importlib

import pytest
import torch

from vdengine import ops
from vdengine.ops import reference
from vdengine.ops._fastpath import ValidatedCalls


def _posgn_args(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 5, 3, generator=g).to(dtype)
    scale = torch.randn(2, 8, 5, 3, generator=g).to(dtype)
    shift = torch.randn(2, 8, 5, 3, generator=g).to(dtype)
    return x, scale, shift


def _count_validations(monkeypatch, module_name: str) -> dict[str, int]:
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, "_calls", ValidatedCalls())  # no signature seen by other tests
    calls = {"n": 0}
    original = module._validate

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "_validate", counted)
    return calls


def test_a_signature_is_validated_once_with_the_same_results(monkeypatch):
    calls = _count_validations(monkeypatch, "vdengine.ops.posgn")
    x, scale, shift = _posgn_args()
    expected = reference.posgn(x, scale, shift, 4, silu=True)
    outs = [ops.posgn(x, scale, shift, 4, silu=True) for _ in range(3)]
    assert calls["n"] == 1
    for out in outs:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    ops.posgn(x, scale, shift, 4, silu=False)  # another scalar: another signature
    ops.posgn(x[:2], scale, shift, 4, silu=True)  # another shape
    assert calls["n"] == 3


@pytest.mark.parametrize("bad, error, match", [
    ({"num_groups": 3}, ValueError, "num_groups"),  # same tensors, a bad scalar
    ({"num_groups": 4.0}, TypeError, "num_groups"),  # 4.0 == 4: the key holds the type
    ({"num_groups": True}, TypeError, "num_groups"),
    ({"x": "strided"}, ValueError, "x"),
    ({"x": "float64"}, TypeError, "x"),
    ({"scale": "rows"}, ValueError, "shift must have shape"),
])
def test_bad_calls_after_a_validated_one_still_raise(bad, error, match):
    x, scale, shift = _posgn_args()
    ops.posgn(x, scale, shift, 4)  # validated
    args = {"x": x, "scale": scale, "shift": shift, "num_groups": 4}
    if bad.get("x") == "strided":
        bad = {"x": torch.randn(4, 8, 3, 5).transpose(2, 3)}
    elif bad.get("x") == "float64":
        bad = {"x": x.double()}
    elif bad.get("scale") == "rows":
        bad = {"scale": torch.randn(3, 8, 5, 3)}
    args.update(bad)
    with pytest.raises(error, match=match):
        ops.posgn(**args)


def test_grad_is_refused_every_time():
    x, scale, shift = _posgn_args()
    ops.posgn(x, scale, shift, 4)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="reference"):
            ops.posgn(x.clone().requires_grad_(), scale, shift, 4)


def test_the_profiler_still_sees_the_custom_op():
    x, scale, shift = _posgn_args()
    ops.posgn(x, scale, shift, 4)
    with torch.profiler.profile() as prof:
        ops.posgn(x, scale, shift, 4)
    assert any(e.key == "vdengine::posgn" for e in prof.key_averages())


@pytest.mark.parametrize("op", ["group_norm", "temporal_attention", "geglu"])
def test_every_hot_op_takes_the_fast_path(monkeypatch, op):
    calls = _count_validations(monkeypatch, f"vdengine.ops.{op}")
    g = torch.Generator().manual_seed(1)
    if op == "group_norm":
        args = (torch.randn(6, 8, 4, 4, generator=g), 2)
        kwargs = {"frames": 3, "silu": True}
    elif op == "temporal_attention":
        qkv = torch.randn(6, 5, 3 * 32, generator=g)
        args = (*qkv.chunk(3, dim=-1), 3, 2)
        kwargs = {}
    else:
        args = (torch.randn(3, 5, 16, generator=g),)
        kwargs = {}
    expected = getattr(reference, op)(*args, **kwargs)
    for _ in range(3):
        torch.testing.assert_close(getattr(ops, op)(*args, **kwargs), expected, atol=1e-5,
                                   rtol=1e-5)
    assert calls["n"] == 1


def test_validated_calls_are_bounded_and_skip_traced_inputs():
    calls = ValidatedCalls(maxsize=2)
    keys = [calls.key([torch.zeros(n)], [1]) for n in (1, 2, 3)]
    for k in keys:
        calls.add(k)
    assert keys[2] in calls and keys[0] not in calls  # cleared when full
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        assert calls.key([torch.zeros(2)], []) is None
