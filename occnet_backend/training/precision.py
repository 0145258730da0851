"""Where and in which precision training runs: the device ('auto' = a GPU when there is one) and
mixed precision (fp16 + grad scaler on CUDA, bf16 on a CPU that multiplies bf16 in hardware)."""

from __future__ import annotations

import torch

from occnet_contract.settings import AMP_MODES


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; an explicit 'cuda' without a GPU is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}); use device='cpu' or 'auto', or install a CUDA build of torch"
        )
    if str(device) not in ("cpu",) and not str(device).startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Without it, torch
    emulates bf16 matmuls at about half the fp32 rate, so bf16 autocast makes training slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def describe_precision(amp: bool | str | None, device: torch.device, dtype: torch.dtype | None) -> str:
    """One line on the training precision and why, for the log and metrics.json: 'auto' silently
    meaning fp32 on a CPU without native bf16 surprised users."""
    name = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    if amp is True or amp == "auto":
        if device.type == "cuda":
            return f"{name} (amp '{amp}': fp16 on CUDA)"
        if dtype is None:
            return "float32 (amp 'auto' on a CPU without native bf16, where bf16 is slower than fp32)"
        return f"{name} (amp 'auto': this CPU multiplies bf16 in hardware)"
    return f"{name} (amp {amp!r})"


def resolve_amp(amp: bool | str | None, device: torch.device) -> torch.dtype | None:
    """AMP setting -> autocast dtype (None: off).

    'auto'/True: fp16 on CUDA; on the CPU bf16 where the CPU has native bf16 (faster than fp32 at the same
    reconstruction quality there, slower without it: BENCHMARKS.md), otherwise off.
    """
    if amp is None or amp is False or amp == "off":
        return None
    if amp is True or amp == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device (fp16 on the CPU is slow and unscaled); use 'bf16' or 'auto'")
        return torch.float16
    raise ValueError(f"amp must be one of {AMP_MODES} (or True/False), got {amp!r}")
