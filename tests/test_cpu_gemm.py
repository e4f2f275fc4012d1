"""The CPU training step's GEMMs through oneDNN (`trainer.cpu_gemm`): same products and gradients
as torch's own, on every operand layout the step passes, and a clear choice of backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer import cpu_gemm


@pytest.mark.parametrize("backend", ["onednn", "mkl"])
def test_products_match_on_every_layout(monkeypatch, backend: str):
    if backend == "onednn" and not cpu_gemm._onednn_works():
        pytest.skip("this torch has no working oneDNN linear")  # the mkl case still runs
    monkeypatch.setenv("UVD_CPU_GEMM", backend)
    assert cpu_gemm.backend() == backend
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(70, 33, generator=generator), torch.randn(45, 33, generator=generator)
    expected = (a.double() @ b.double().t()).float()
    for left in (a, a.t().contiguous().t()):  # contiguous and transposed views, as the loss passes them
        for right in (b, b.t().contiguous().t()):
            got = cpu_gemm.matmul_t(left, right)
            assert got.shape == (70, 45) and torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 9, 33, generator=generator, requires_grad=True)
    weight = torch.randn(45, 33, generator=generator, requires_grad=True)
    out = cpu_gemm.linear(x, weight)
    grad = torch.randn(out.shape, generator=generator)
    got_x, got_w = torch.autograd.grad(out, (x, weight), grad)
    ref = F.linear(x.double(), weight.double())
    ref_x, ref_w = torch.autograd.grad(ref, (x, weight), grad.double())
    assert torch.allclose(out, ref.float(), atol=1e-5)
    assert torch.allclose(got_x, ref_x.float(), atol=1e-4) and torch.allclose(got_w, ref_w.float(), atol=1e-4)


def test_edge_cases_fall_back_to_torch(monkeypatch):
    """An empty inner dimension (oneDNN refuses K = 0) and operands autograd tracks (the op has no
    backward) take torch's own product: zeros of the right shape, and gradients that flow."""
    monkeypatch.delenv("UVD_CPU_GEMM", raising=False)
    assert torch.equal(cpu_gemm.matmul_t(torch.randn(3, 0), torch.randn(4, 0)), torch.zeros(3, 4))
    x = torch.randn(0, 3, 16, requires_grad=True)
    weight = torch.randn(5, 16, requires_grad=True)
    out = cpu_gemm.linear(x, weight)
    out.sum().backward()
    assert out.shape == (0, 3, 5) and torch.equal(weight.grad, torch.zeros(5, 16))
    a = torch.randn(6, 4, requires_grad=True)
    b = torch.randn(5, 4)
    cpu_gemm.matmul_t(a, b).sum().backward()
    assert torch.allclose(a.grad, b.sum(0).expand(6, 4))


def test_only_eager_fp32_cpu_operands_take_onednn(monkeypatch):
    if not cpu_gemm._onednn_works():
        pytest.skip("this torch has no working oneDNN linear")
    monkeypatch.delenv("UVD_CPU_GEMM", raising=False)
    a = torch.randn(4, 8)
    assert cpu_gemm.backend() == "onednn" and cpu_gemm.wanted(a, a)
    assert not cpu_gemm.wanted(a.double(), a.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm.wanted(a, a)
    monkeypatch.setenv("UVD_CPU_GEMM", "mkl")
    assert not cpu_gemm.wanted(a, a)


def test_backend_setting_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("UVD_CPU_GEMM", "blas")
    with pytest.raises(ValueError, match="UVD_CPU_GEMM must be one of auto, onednn, mkl"):
        cpu_gemm.backend()
    monkeypatch.setenv("UVD_CPU_GEMM", "onednn")
    monkeypatch.setattr(cpu_gemm, "_onednn_works", lambda: False)
    with pytest.raises(RuntimeError, match="UVD_CPU_GEMM=onednn.*unset it"):
        cpu_gemm.backend()
    monkeypatch.setenv("UVD_CPU_GEMM", "auto")
    assert cpu_gemm.backend() == "mkl"  # auto without the op: torch's own GEMMs
