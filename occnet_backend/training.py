"""Training loop for occupancy networks, readable top to bottom.

`OccupancyTrainer.train` runs optimizer steps until `num_epochs` or `max_steps`. A step consumes
`accumulate_steps` batches of {'points': [B, N, 3], 'occupancy': [B, N, 1], ...}, turns each into
logits with ``model.forward_batch(batch)`` (or ``model(batch['points'])`` for models without it),
and minimises ``model.compute_loss(logits, target)`` (+ ``model.regularization_loss(batch)`` when
the model has one, e.g. the code prior of `ConditionalOccupancyNetwork`).

The loss callable receives **logits** in float32 (also under mixed precision) and a float target of
the same shape; assign e.g. ``model.compute_loss = FocalLoss()`` to change what is minimised.

Around that core: validation (loss, IoU, optional MISE meshes), `last`/`best` checkpoints written
atomically, exact resume (same later losses on CPU), TensorBoard scalars, a tqdm bar in a terminal,
JSON-lines events for the Blender add-on, Adam/AdamW with a warm-up + cosine/step LR schedule,
gradient clipping, gradient accumulation, AMP (fp16 + grad scaler on CUDA, bf16 on CPU),
SIGINT/SIGTERM cancellation that finishes the step and saves, and DDP under torchrun.

Events (only rank 0 writes them): ``start`` {device, parameters, total_steps, step},
``progress`` {step, total, loss, iou, points_per_s, eta_s, lr, epoch}, ``metrics`` {step,
val_loss, val_iou}, ``checkpoint`` {path, kind, step}, ``mesh`` {shape_id, path, step}. The process
that owns the run (the `train` command) emits ``done``/``error``; the trainer does not, because a
caller like `fit` still has work to do after training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from occnet_backend.events import NULL_EVENTS, EventWriter

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("off", "auto", "bf16", "fp16")


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


def occupancy_iou(logits: torch.Tensor, occupancy: torch.Tensor, threshold: float = 0.5) -> float:
    """IoU of the predicted (p >= threshold) and true occupancy over a set of points."""
    level = math.log(threshold / (1 - threshold))
    pred = logits >= level
    true = occupancy.reshape(logits.shape) > 0.5
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else (pred & true).sum().item() / union


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

    'auto'/True: fp16 on CUDA; on the CPU bf16 where the CPU has native bf16 (half the training
    time of fp32 at the same reconstruction quality, BENCHMARKS.md), otherwise off.
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


class LRSchedule:
    """LR factor after `step` optimizer steps: linear warm-up, then constant, cosine or step decay.

    A plain object of primitives, so `LambdaLR.state_dict()` stores it and a checkpoint restores it.
    """

    def __init__(
        self,
        kind: str = "constant",
        warmup_steps: int = 0,
        total_steps: int | None = None,
        step_size: int | None = None,
        gamma: float = 0.1,
        min_lr_ratio: float = 0.0,
    ):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if kind == "step" and (step_size is None or step_size < 1):
            raise ValueError(f"lr_schedule 'step' needs lr_step_size >= 1 (steps between decays), got {step_size}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = total_steps
        self.step_size = step_size
        self.gamma = float(gamma)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        after = step - self.warmup_steps
        if self.kind == "step":
            return self.gamma ** (after // self.step_size)
        if self.kind == "cosine":
            span = max(1, (self.total_steps or 1) - self.warmup_steps)
            progress = min(1.0, after / span)
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0


def loss_function(model: nn.Module):
    """``(logits, target) -> loss``: the model's training loss, honouring `model.compute_loss =
    FocalLoss()` (also on models whose nn.Module.__setattr__ filed the assigned module under
    _modules); a user's loss receives probabilities (see occnet_backend.losses)."""
    from occnet_backend.losses import training_loss

    custom = model.__dict__.get("compute_loss") or model._modules.get("compute_loss")
    return training_loss(custom) if custom is not None else model.compute_loss


def batch_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    """Logits for a training batch: `model.forward_batch(batch)`, or `model(points)` without it."""
    if hasattr(model, "forward_batch"):
        return model.forward_batch(batch)
    return model(batch["points"])


class _BatchModule(nn.Module):
    """batch -> logits, as a module: what DDP wraps, so its forward hooks see every step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return batch_logits(self.model, batch)


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Run a block (validation, mesh extraction) without disturbing the training RNG streams."""
    from occnet_backend.checkpoints import capture_rng_state, restore_rng_state

    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


PROGRESS_INTERVAL_S = 1.0


class NonFiniteLossError(ValueError):
    """Training diverged (NaN or infinite loss): stopped before anything is saved from it."""


class OccupancyTrainer:
    """Trains `model` on batches from `train_dataloader`.

    Args:
        model: `OccupancyNetwork`, `ConditionalOccupancyNetwork`, or any module with
            ``forward_batch(batch)`` or ``forward(points)`` and ``compute_loss(logits, target)``.
        train_dataloader: yields dicts with 'points' [B, N, 3] and 'occupancy' [B, N, 1]
            (plus 'shape_index' [B] for a code-table model). A DataLoader's dataset/sampler
            ``set_epoch`` is called every epoch.
        val_dataloader: optional; validated every `val_every` steps and at the end.
        device: 'auto' (GPU when there is one), 'cpu' or 'cuda[:N]'.
        optimizer: a torch optimizer, or 'adam' / 'adamw' (default 'adam') built with `lr`,
            `weight_decay`.
        events: JSON-lines event writer (the Blender add-on reads it); silent by default.
        progress_every: steps between progress events / log lines.
        lr_schedule: 'constant', 'cosine' (to `min_lr_ratio`·lr at the last step) or 'step'
            (×`lr_gamma` every `lr_step_size` steps); all after `warmup_steps` of linear warm-up.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        accumulate_steps: batches per optimizer step (gradients summed; loss averaged).
        amp: False/'off', True/'auto' (fp16 + grad scaler on CUDA; bf16 on a CPU with native bf16,
            else off: see `resolve_amp`), 'bf16', 'fp16'.
        log_dir: TensorBoard event files (rank 0); validation meshes go to log_dir/meshes.
        checkpoint_dir: where `last.pt` (every `checkpoint_every` steps, at the end, on cancel)
            and `best.pt` (best validation IoU) are written. None: no checkpoints.
        val_every: steps between validations (None: only at the end).
        val_meshes: extract this many meshes from the first validation batch at each validation.
        val_mesh_resolution: MISE resolution of those meshes.
        progress_bar: tqdm bar on stderr: True, False or 'auto' (when stderr is a terminal).
        handle_signals: during `train`, SIGINT/SIGTERM ask to stop after the current step (then
            `last` is saved and `status` is 'cancelled'); a second signal interrupts at once.
            Off by default so library callers keep Python's usual KeyboardInterrupt.
        config: the user's config dict, stored in checkpoints (see `create_trainer_from_config`).
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataloader: Iterable[dict],
        val_dataloader: Iterable[dict] | None = None,
        device: str | torch.device = "auto",
        optimizer: torch.optim.Optimizer | str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        events: EventWriter = NULL_EVENTS,
        progress_every: int = 10,
        *,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.1,
        min_lr_ratio: float = 0.0,
        grad_clip: float | None = None,
        accumulate_steps: int = 1,
        amp: bool | str | None = False,
        log_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        val_every: int | None = None,
        val_meshes: int = 0,
        val_mesh_resolution: int = 64,
        progress_bar: bool | str = "auto",
        handle_signals: bool = False,
        config: dict | None = None,
    ):
        from occnet_backend import distributed

        if accumulate_steps < 1:
            raise ValueError(f"accumulate_steps must be >= 1, got {accumulate_steps}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
        for name, value in (("checkpoint_every", checkpoint_every), ("val_every", val_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if progress_bar not in (True, False, "auto"):
            raise ValueError(f"progress_bar must be True, False or 'auto', got {progress_bar!r}")

        self.dist = distributed.current()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_dataloader = train_dataloader
        self.val_dataloader = val_dataloader
        if optimizer is None or isinstance(optimizer, str):
            kind = optimizer or "adam"
            if kind not in OPTIMIZERS:
                raise ValueError(f"optimizer must be one of {OPTIMIZERS} or a torch optimizer, got {kind!r}")
            cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
            optimizer = cls(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.optimizer = optimizer
        self.schedule = LRSchedule(lr_schedule, warmup_steps, None, lr_step_size, lr_gamma, min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.precision = describe_precision(amp, self.device, self.amp_dtype)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.events = events if self.dist.is_main else NULL_EVENTS
        self.progress_every = max(1, int(progress_every))
        self.grad_clip = grad_clip
        self.accumulate_steps = int(accumulate_steps)
        self.log_dir = Path(log_dir) if log_dir else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.val_every = val_every
        self.val_meshes = int(val_meshes)
        self.val_mesh_resolution = int(val_mesh_resolution)
        self.progress_bar = progress_bar
        self.handle_signals = handle_signals
        self.config = config
        self.trainer_config: dict[str, Any] = dict(
            optimizer=type(self.optimizer).__name__, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
            warmup_steps=warmup_steps, lr_step_size=lr_step_size, lr_gamma=lr_gamma, min_lr_ratio=min_lr_ratio,
            grad_clip=grad_clip, accumulate_steps=accumulate_steps, amp=str(amp), device=str(self.device),
            checkpoint_every=checkpoint_every, val_every=val_every, val_meshes=val_meshes,
            progress_every=self.progress_every, world_size=self.dist.world_size,
        )

        # the module that runs forward: the bare model, or DDP around it under torchrun
        self._module: nn.Module = _BatchModule(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self._module = DDP(
                self._module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(model, "codes", None) is not None and getattr(model, "encoder", None) is not None),
            )

        self.num_epochs: int | None = None  # defaults of train() (set by create_trainer_from_config)
        self.max_steps: int | None = None
        self.step = 0
        self.epoch = 0
        self.status = "idle"
        self.best_metric: float | None = None
        self.history: list[dict[str, Any]] = []
        self._batches_in_epoch = 0
        self._epoch_rng: dict | None = None
        self._pending_rng: dict | None = None
        self._stop_requested = False
        self._writer = None

    # -- one step ---------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, batch: dict, scale: float) -> torch.Tensor:
        """Loss + IoU counts of one batch, gradients added (scaled by `scale`); returns
        tensor [loss, intersection, union, points] (still on the device: one sync per step)."""
        batch = self._to_device(batch)
        with self._autocast():
            logits = self._module(batch)
        logits = logits.float()
        target = batch["occupancy"].reshape(logits.shape).to(logits.dtype)
        loss = loss_function(self.model)(logits, target)
        if hasattr(self.model, "regularization_loss"):
            loss = loss + self.model.regularization_loss(batch)
        self.scaler.scale(loss * scale).backward()
        with torch.no_grad():
            pred, true = logits >= 0, target > 0.5
            return torch.stack([
                loss.detach().float(), (pred & true).sum().float(), (pred | true).sum().float(),
                torch.tensor(float(target.numel()), device=logits.device),
            ])

    def _optimizer_step(self, micro_batches: int) -> None:
        if micro_batches < self.accumulate_steps:  # a short group at the end of an epoch: same mean
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.accumulate_steps / micro_batches)
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            self._last_grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step on one batch (no accumulation); returns the batch loss and IoU."""
        self.model.train()
        stats = self._forward_backward(batch, 1.0)
        self._optimizer_step(1)
        loss, inter, union, _ = stats.tolist()
        return {"loss": loss, "iou": inter / union if union else 1.0}

    # -- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and IoU over the validation loader (eval mode, float32)."""
        if self.val_dataloader is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        losses, inter, union = [], 0.0, 0.0
        try:
            for batch in self.val_dataloader:
                batch = self._to_device(batch)
                logits = batch_logits(self.model, batch).float()
                target = batch["occupancy"].reshape(logits.shape).to(logits.dtype)
                losses.append(float(loss_function(self.model)(logits, target)))
                pred, true = logits >= 0, target > 0.5
                inter += (pred & true).sum().item()
                union += (pred | true).sum().item()
        finally:
            self.model.train(was_training)
        if not losses:
            raise ValueError("the validation dataloader yielded no batches (is the validation set empty?)")
        return {"val_loss": sum(losses) / len(losses), "val_iou": inter / union if union else 1.0}

    def _validation_meshes(self) -> None:
        """MISE meshes of the first `val_meshes` shapes of the first validation batch: PLY files
        beside the checkpoints (``CHECKPOINT_DIR/val_meshes/step<N>_<shape>.ply``) and TensorBoard
        mesh summaries, so a user sees the shapes improve, not only a loss curve."""
        from occnet_backend.extraction import extract_mesh
        from occnet_backend.files import write_ply

        batch = self._to_device(next(iter(self.val_dataloader)))
        count = min(self.val_meshes, len(batch["points"]))
        out_dir = (self.checkpoint_dir or self.log_dir) / "val_meshes"
        ids = batch.get("shape_id", [f"shape{i}" for i in range(count)])
        was_training = self.model.training
        self.model.eval()
        try:
            if hasattr(self.model, "condition_for_batch"):
                with torch.no_grad():
                    codes = self.model.condition_for_batch(batch)[:count]
                fns = [self.model.logit_fn(condition=c) for c in codes]
            else:
                fns = [self.model.predict_logits] * count
            for i, fn in enumerate(fns):
                mesh = extract_mesh(fn, resolution=self.val_mesh_resolution)
                path = write_ply(out_dir / f"step{self.step:07d}_{ids[i]}.ply", mesh["vertices"], mesh["faces"])
                self.events.emit("mesh", shape_id=str(ids[i]), path=str(path.resolve()), step=self.step)
                if self._writer is not None and len(mesh["faces"]):
                    self._writer.add_mesh(f"val/mesh_{i}", torch.as_tensor(mesh["vertices"][None]),
                                          faces=torch.as_tensor(mesh["faces"][None].astype("int32")), global_step=self.step)
        finally:
            self.model.train(was_training)

    def _run_validation(self, record: dict[str, Any]) -> None:
        """Validate on rank 0 (without touching the training RNG), share the result with every
        rank so all take the same `best` decision, and save `best` when IoU improved."""
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            with _preserved_rng():
                metrics = self.validate()
                if self.val_meshes > 0 and (self.checkpoint_dir or self.log_dir) is not None:
                    self._validation_meshes()  # never into the working folder of a run that saves nothing
        if self.dist.enabled:
            shared = [metrics]
            torch.distributed.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        if not metrics:
            return
        record.update(metrics)
        self.events.emit("metrics", step=self.step, **metrics)
        self._scalar("val/loss", metrics["val_loss"])
        self._scalar("val/iou", metrics["val_iou"])
        log.info("step %d validation: loss %.4f IoU %.4f", self.step, metrics["val_loss"], metrics["val_iou"])
        if self.best_metric is None or metrics["val_iou"] > self.best_metric:
            self.best_metric = metrics["val_iou"]
            if self.checkpoint_dir is not None:
                self.save_checkpoint(self.checkpoint_dir / "best.pt", kind="best")

    # -- checkpoints ------------------------------------------------------------------------
    def _gather(self, obj: Any) -> list[Any]:
        if not self.dist.enabled:
            return [obj]
        out: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to resume exactly (see occnet_backend.checkpoints for the layout)."""
        from occnet_backend.checkpoints import TRAIN_FORMAT, model_payload

        current = self._gather(self._capture_rng())
        epoch_start = self._gather(self._epoch_rng)
        data = self._data_identity()
        shape_ids = getattr(getattr(self.train_dataloader, "dataset", None), "shape_ids", None)
        if shape_ids is None and data is not None:
            shape_ids = data.get("shape_ids")  # ShapeNet: ids in code order
        return {
            "format": TRAIN_FORMAT,
            **model_payload(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self._batches_in_epoch,
            "best_metric": self.best_metric,
            "trainer_config": dict(self.trainer_config),
            "config": self.config,
            "rng": {"current": current, "epoch_start": epoch_start},
            "history": [dict(r) for r in self.history],
            "shape_ids": list(shape_ids) if shape_ids is not None else None,
            "data": data,
            "world_size": self.dist.world_size,
            "torch_version": str(torch.__version__),
        }

    def save_checkpoint(self, path: str | Path | None = None, kind: str = "last") -> Path | None:
        """Write a checkpoint atomically (rank 0; every rank must call it under DDP). Returns the path."""
        from occnet_backend.checkpoints import save_checkpoint

        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("no checkpoint path: give path=... or construct the trainer with checkpoint_dir")
            path = self.checkpoint_dir / f"{kind}.pt"
        payload = self.checkpoint_payload()
        if not self.dist.is_main:
            return None
        path = save_checkpoint(path, payload)
        self.events.emit("checkpoint", path=str(Path(path).resolve()), kind=kind, step=self.step)
        log.info("saved %s checkpoint at step %d: %s", kind, self.step, path)
        return Path(path)

    def _data_identity(self) -> dict | None:
        """What the training loader's dataset is (see the datasets' `identity()`), None for a
        dataset of the user's own that does not say."""
        identity = getattr(getattr(self.train_dataloader, "dataset", None), "identity", None)
        return identity() if callable(identity) else None

    def resume(self, path: str | Path, allow_different_data: bool = False) -> "OccupancyTrainer":
        """Load a training checkpoint: weights, optimizer, scheduler, scaler, counters, history and
        RNG states, so the next `train` call continues exactly where the saved run stopped.

        A checkpoint records what it was trained on; resuming on other data is refused (ValueError
        naming both) unless ``allow_different_data`` (fine-tuning, deliberately)."""
        from occnet_backend.checkpoints import TRAIN_FORMAT, describe_data, load_checkpoint

        payload = load_checkpoint(path, map_location="cpu")
        saved = payload.get("data") if isinstance(payload.get("data"), dict) else None
        current = self._data_identity()
        if (not allow_different_data and saved and current
                and (saved.get("type"), saved.get("fingerprint")) != (current.get("type"), current.get("fingerprint"))):
            hint = f"pass --data {saved['root']}" if saved.get("root") else "use the saved run's dataset settings"
            raise ValueError(
                f"{path} was trained on {describe_data(saved)}, but this run trains on {describe_data(current)}; "
                f"to resume, {hint}. To continue training on this data deliberately, pass --allow-different-data "
                "(resume(..., allow_different_data=True))"
            )
        if payload.get("format") != TRAIN_FORMAT:
            raise ValueError(f"{path}: a {payload.get('format')!r} checkpoint holds no training state; "
                             f"resume needs a {TRAIN_FORMAT!r} file (CHECKPOINT_DIR/last.pt)")
        missing = [k for k in ("model_class", "model", "optimizer", "step", "epoch") if k not in payload]
        if missing or not isinstance(payload.get("step"), int) or not isinstance(payload.get("epoch"), int):
            raise ValueError(f"{path}: the training checkpoint lacks {', '.join(missing) or 'a valid step/epoch'}; "
                             "it was not written by `train`, or was edited; resume from another checkpoint")
        if payload["model_class"] != type(self.model).__name__:
            raise ValueError(f"{path}: holds a {payload['model_class']}, but this trainer trains a "
                             f"{type(self.model).__name__}; use the same model settings as the saved run")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: does not fit this model/optimizer ({str(err).splitlines()[0]}); "
                             "use the same model and optimizer settings as the saved run") from None
        if payload.get("scheduler"):
            self.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.step, self.epoch = int(payload["step"]), int(payload["epoch"])
        self._batches_in_epoch = int(payload.get("batches_in_epoch", 0))
        self.best_metric = payload.get("best_metric")
        self.history = list(payload.get("history") or [])
        rng = payload.get("rng") or {}
        rank = self.dist.rank if payload.get("world_size", 1) == self.dist.world_size else 0
        if rng.get("current"):
            self._pending_rng = rng["current"][min(rank, len(rng["current"]) - 1)]
        if rng.get("epoch_start"):
            self._epoch_rng = rng["epoch_start"][min(rank, len(rng["epoch_start"]) - 1)]
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        return self

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics). DDP broadcasts them
        before each forward, so after the last step ranks differ by one local update."""
        if self.dist.enabled:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer.data, src=0)

    # -- signals ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask `train` to stop after the current step (what SIGINT/SIGTERM do); thread-safe."""
        self._stop_requested = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # second signal: stop now (the previous checkpoint stays valid)
        self._stop_requested = True
        log.warning("%s: stopping after the current step and saving (send it again to stop at once)",
                    signal.Signals(signum).name)

    def _install_signal_handlers(self) -> dict:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return previous

    def _should_stop(self) -> bool:
        """The stop flag, agreed by all ranks (one rank stopping alone would hang the others)."""
        if not self.dist.enabled:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    # -- logging ----------------------------------------------------------------------------
    def _scalar(self, tag: str, value: float) -> None:
        if self._writer is not None and value is not None and math.isfinite(value):
            self._writer.add_scalar(tag, value, self.step)

    def _open_writer(self) -> None:
        if self.log_dir is not None and self.dist.is_main and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))

    # -- the loop ---------------------------------------------------------------------------
    def _steps_per_epoch(self) -> int | None:
        try:
            return math.ceil(len(self.train_dataloader) / self.accumulate_steps)  # type: ignore[arg-type]
        except TypeError:
            return None

    def _start_epoch(self) -> tuple[Iterator[dict], int]:
        """An iterator over this epoch's batches, positioned after the ones already consumed.

        The data order of an epoch is fixed by the RNG state at its start (DataLoader seeds and
        shuffles from it), so resuming mid-epoch restores that state, re-creates the iterator,
        skips the consumed batches, then restores the RNG state of the moment of the checkpoint.
        """
        skip = self._batches_in_epoch
        if skip and self._epoch_rng is not None:
            current = self._pending_rng or self._capture_rng()
            self._restore_rng(self._epoch_rng)
        else:
            skip = 0
            self._batches_in_epoch = 0
            if self._pending_rng is not None:
                self._restore_rng(self._pending_rng)
            current = None
            self._epoch_rng = self._capture_rng()
        self._pending_rng = None
        loader = self.train_dataloader
        for holder in (getattr(loader, "dataset", None), getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(self.epoch)
        iterator = iter(self.train_dataloader)
        skipped = 0
        for _ in range(skip):
            try:
                next(iterator)
                skipped += 1
            except StopIteration:
                break
        if current is not None:
            self._restore_rng(current)
        return iterator, skipped

    def _capture_rng(self) -> dict[str, Any]:
        """The global RNG states plus the training loader's own generator (it shuffles, and seeds
        the workers), so that a resume draws exactly the batches the uninterrupted run would."""
        from occnet_backend.checkpoints import capture_rng_state

        state = capture_rng_state()
        generator = getattr(self.train_dataloader, "generator", None)
        if generator is not None:
            state["loader"] = generator.get_state()
        return state

    def _restore_rng(self, state: dict[str, Any]) -> None:
        from occnet_backend.checkpoints import restore_rng_state

        restore_rng_state(state)
        generator = getattr(self.train_dataloader, "generator", None)
        if generator is not None and state.get("loader") is not None:
            generator.set_state(state["loader"].cpu().to(torch.uint8))

    def train(self, num_epochs: int | None = None, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until `num_epochs` epochs or `max_steps` optimizer steps in total (counting steps
        before a resume), whichever comes first; returns the history (one record per step).
        Without either, the trainer's `num_epochs` / `max_steps` attributes (from a config) apply.

        After it returns, `status` is 'ok' or 'cancelled' (stop requested by a signal or
        `request_stop`; `last` was saved when there is a checkpoint_dir).
        """
        if num_epochs is None and max_steps is None:
            num_epochs, max_steps = self.num_epochs, self.max_steps
        if num_epochs is None and max_steps is None:
            raise ValueError("give num_epochs or max_steps (or both)")
        per_epoch = self._steps_per_epoch()
        total = max_steps
        if num_epochs is not None and per_epoch is not None:
            by_epochs = num_epochs * per_epoch
            total = by_epochs if total is None else min(total, by_epochs)
        if self.schedule.kind == "cosine":
            if total is None:
                raise ValueError("lr_schedule 'cosine' needs the run length: give max_steps (the dataloader has no len)")
            self.schedule.total_steps = total

        n_params = sum(p.numel() for p in self.model.parameters())
        self.events.emit("start", device=str(self.device), parameters=n_params, total_steps=total, step=self.step,
                         world_size=self.dist.world_size)
        log.info("training on %s (%d process%s), %d parameters, step %d of %s; precision %s", self.device,
                 self.dist.world_size, "es" if self.dist.enabled else "", n_params, self.step, total or "?", self.precision)
        self._open_writer()
        show_bar = self.dist.is_main and (self.progress_bar is True or (self.progress_bar == "auto" and sys.stderr.isatty()))
        from tqdm import tqdm

        bar = tqdm(total=total, initial=self.step, disable=not show_bar, file=sys.stderr, dynamic_ncols=True, unit="step")
        previous_handlers = self._install_signal_handlers()
        self._stop_requested = False
        self.status = "running"
        start = time.perf_counter()
        self._progress_at = start
        start_step = self.step
        points_seen, train_seconds = 0.0, 0.0

        def done() -> bool:
            return (num_epochs is not None and self.epoch >= num_epochs) or (max_steps is not None and self.step >= max_steps)

        try:
            self.model.train()
            while not done() and not self._stop_requested:
                iterator, skipped = self._start_epoch()
                fresh, exhausted = 0, False
                group: list[torch.Tensor] = []
                step_start = time.perf_counter()
                while True:
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    fresh += 1
                    self._batches_in_epoch += 1
                    last_of_group = len(group) + 1 == self.accumulate_steps
                    sync = contextlib.nullcontext()
                    if self.dist.enabled and not last_of_group:
                        sync = self._module.no_sync()
                    with sync:
                        group.append(self._forward_backward(batch, 1.0 / self.accumulate_steps))
                    if not last_of_group:
                        continue
                    points, seconds = self._finish_step(group, step_start, total, bar)
                    points_seen, train_seconds = points_seen + points, train_seconds + seconds
                    group = []
                    stop = self._after_step(total, start, start_step, points_seen, train_seconds)
                    step_start = time.perf_counter()
                    if stop or (max_steps is not None and self.step >= max_steps):
                        break
                if fresh + skipped == 0:
                    raise ValueError("the training dataloader yielded no batches (is the dataset empty?)")
                if not exhausted:  # stopped mid-epoch (right after a step): a resume continues it
                    break
                if group:  # a short accumulation group at the end of the epoch
                    points, seconds = self._finish_step(group, step_start, total, bar)
                    points_seen, train_seconds = points_seen + points, train_seconds + seconds
                    self._after_step(total, start, start_step, points_seen, train_seconds)
                self.epoch += 1
                self._batches_in_epoch = 0
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            bar.close()

        self._sync_buffers()
        self.status = "cancelled" if self._stop_requested else "ok"
        validated_now = self.val_every is not None and self.step % self.val_every == 0
        if self.status == "ok" and self.val_dataloader is not None and not validated_now and self.step > start_step:
            self._run_validation(self.history[-1] if self.history else {})  # every run ends validated
        if self.checkpoint_dir is not None and (self.step > start_step or self.status == "cancelled"):
            self.save_checkpoint(kind="last")
        if self._writer is not None:
            self._writer.flush()
        if self.dist.enabled:
            # every rank leaves together, after rank 0 has written the checkpoint, so no rank tears
            # its process group down while another still works (rank 0 aborted at teardown once in
            # ~12 runs of tests/test_ddp.py: gloo's "terminate called without an active exception")
            torch.distributed.barrier()
        if self.status == "cancelled":
            log.warning("training cancelled at step %d", self.step)
        return self.history

    def _finish_step(self, group: list[torch.Tensor], step_start: float, total: int | None, bar) -> tuple[float, float]:
        """Optimizer step after a group of batches; records the step in the history."""
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self._optimizer_step(len(group))
        loss, inter, union, points = torch.stack(group).sum(0).tolist()  # the one device sync per step
        loss /= len(group)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} at step {self.step + 1} (learning rate {lr:g}): training diverged "
                "and the weights are no longer usable; lower the learning rate (or enable gradient clipping) and "
                "train again. Checkpoints written before this step are intact"
            )
        seconds = time.perf_counter() - step_start
        record = {"step": self.step, "epoch": self.epoch, "loss": loss, "iou": inter / union if union else 1.0,
                  "lr": lr, "seconds": seconds}
        self.history.append(record)
        bar.update(1)
        self._scalar("train/loss", loss)
        self._scalar("train/iou", record["iou"])
        self._scalar("train/lr", record["lr"])
        return points, seconds

    def _after_step(self, total: int | None, start: float, start_step: int, points_seen: float,
                    train_seconds: float) -> bool:
        """Progress, validation and periodic checkpoints after a step; True when asked to stop."""
        record = self.history[-1]
        elapsed = time.perf_counter() - start
        record["seconds"] = elapsed
        now = time.perf_counter()
        # every progress_every steps, and at least every PROGRESS_INTERVAL_S on a slow machine
        if self.step % self.progress_every == 0 or self.step == total or now - self._progress_at >= PROGRESS_INTERVAL_S:
            self._progress_at = now
            rate = points_seen * self.dist.world_size / max(train_seconds, 1e-9)
            done_here = self.step - start_step
            eta = (total - self.step) * elapsed / done_here if total and done_here else None
            self.events.emit("progress", step=self.step, total=total, loss=record["loss"], iou=record["iou"],
                             points_per_s=rate, eta_s=eta, lr=record["lr"], epoch=self.epoch)
            self._scalar("train/points_per_s", rate)
            log.info("step %d/%s loss %.4f iou %.3f lr %.2e %.0f pts/s", self.step, total or "?",
                     record["loss"], record["iou"], record["lr"], rate)
        stop = self._should_stop()
        if self.val_dataloader is not None and self.val_every is not None and self.step % self.val_every == 0:
            self._run_validation(record)
        if (self.checkpoint_dir is not None and self.checkpoint_every is not None
                and self.step % self.checkpoint_every == 0 and not stop and self.step != total):
            self.save_checkpoint(kind="last")
        self._stop_requested = stop
        return stop
