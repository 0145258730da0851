"""The training loop for occupancy networks, readable top to bottom (`OccupancyTrainer.train`).

A step consumes `accumulate_steps` batches of {'points': [B, N, 3], 'occupancy': [B, N, 1], ...}
(with 'target' [B, N, 1], soft occupancies in [0, 1], the loss's target instead of 'occupancy'),
turns each into logits with ``model.forward_batch(batch)`` and minimises
``model.compute_loss(logits, target) + model.regularization_loss(batch)`` (the code prior of a
network with a code table). The loss receives **logits** in float32 (also under mixed precision)
and a float target of the same shape; assign e.g. ``model.compute_loss = FocalLoss()`` to change
what is minimised (see `occnet_backend.training.losses`).

Each concern around the loop is its own unit: device and precision (`precision`), optimizer and LR
schedule (`schedule`), exact resume (`resume`), checkpoints (`checkpoints`), validation
(`validation`), events, log lines, tqdm and TensorBoard (`run_log`), SIGINT/SIGTERM (a stop after
the current step, then `last` is saved: `occnet_backend.signals`), DDP under torchrun
(`distributed`).

Events (rank 0; kinds and fields in ``occnet_contract.protocol``): ``start``, ``progress``,
``metrics`` (validation), ``checkpoint``, ``mesh`` (validation meshes). The process that owns the
run (the `train` command) emits ``done``/``error``; the trainer does not, because a caller like
`fit` still has work to do after training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from occnet_backend.events import NULL_EVENTS, EventWriter
from occnet_backend.models.network import OccupancyNetwork
from occnet_backend.signals import StopRequest
from occnet_backend.training import checkpoints, distributed
from occnet_backend.training.early_stopping import HeldOutIoU
from occnet_backend.training.losses import training_loss
from occnet_backend.training.precision import describe_precision, resolve_amp, resolve_device
from occnet_backend.training.resume import DataPosition, preserved_rng
from occnet_backend.training.run_log import RunLog
from occnet_backend.training.schedule import LRSchedule, build_optimizer
from occnet_backend.training.validation import to_device, validate, validation_meshes

log = logging.getLogger(__name__)


class NonFiniteLossError(ValueError):
    """Training diverged (NaN or infinite loss): stopped before anything is saved from it."""


def loss_function(model: nn.Module):
    """``(logits, target) -> loss``: the model's training loss, honouring `model.compute_loss =
    FocalLoss()` (also on models whose nn.Module.__setattr__ filed the assigned module under
    _modules); a user's loss receives probabilities (see occnet_backend.training.losses)."""
    custom = model.__dict__.get("compute_loss") or model._modules.get("compute_loss")
    return training_loss(custom) if custom is not None else model.compute_loss


class _BatchModule(nn.Module):
    """batch -> logits, as a module: what DDP wraps, so its forward hooks see every step."""

    def __init__(self, model: OccupancyNetwork):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.forward_batch(batch)


class OccupancyTrainer:
    """Trains `model` on batches from `train_dataloader`.

    Args:
        model: an `OccupancyNetwork` (or `ConditionalOccupancyNetwork`).
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
            else off: see `precision.resolve_amp`), 'bf16', 'fp16'.
        log_dir: TensorBoard event files (rank 0).
        checkpoint_dir: where `last.pt` (every `checkpoint_every` steps, at the end, on cancel)
            and `best.pt` (best validation IoU) are written. None: no checkpoints.
        val_every: steps between validations (None: only at the end).
        val_meshes: extract this many meshes from the first validation batch at each validation
            (into CHECKPOINT_DIR/val_meshes, else LOG_DIR/val_meshes; never without either).
        val_mesh_resolution: MISE resolution of those meshes.
        progress_bar: tqdm bar on stderr: True, False or 'auto' (when stderr is a terminal).
        handle_signals: during `train`, SIGINT/SIGTERM ask to stop after the current step (then
            `last` is saved and `status` is 'cancelled'); a second signal interrupts at once.
            Off by default so library callers keep Python's usual KeyboardInterrupt.
        config: the user's config dict, stored in checkpoints (see `create_trainer_from_config`).
        early_stopping: a `training.early_stopping.HeldOutIoU`: training ends (status 'ok',
            `converged` True) once the held-out IoU of the averaged weights stops rising, before
            `max_steps`, and the model ends with those averaged weights (or its own, where they measure
            better on the held-out points).
    """

    def __init__(
        self,
        model: OccupancyNetwork,
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
        early_stopping: HeldOutIoU | None = None,
    ):
        if not isinstance(model, OccupancyNetwork):
            raise ValueError(f"model must be an OccupancyNetwork or ConditionalOccupancyNetwork, got {type(model).__name__}")
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
            optimizer = build_optimizer(optimizer, model.parameter_groups(lr), lr, weight_decay)
        self.optimizer = optimizer
        self.schedule = LRSchedule(lr_schedule, warmup_steps, None, lr_step_size, lr_gamma, min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.precision = describe_precision(amp, self.device, self.amp_dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16
                                           and self.device.type == "cuda")
        self.run_log = RunLog(events, Path(log_dir) if log_dir else None, progress_every, progress_bar,
                              self.dist.is_main, self.dist.world_size)
        self.grad_clip = grad_clip
        self.accumulate_steps = int(accumulate_steps)
        self.log_dir = Path(log_dir) if log_dir else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.val_every = val_every
        self.val_meshes = int(val_meshes)
        self.val_mesh_resolution = int(val_mesh_resolution)
        self.handle_signals = handle_signals
        self.config = config
        if early_stopping is not None and self.dist.enabled:
            raise ValueError("early_stopping is for a single process: under torchrun the ranks would stop apart")
        self.early_stopping = early_stopping
        self.converged = False

        # the module that runs forward: the bare model, or DDP around it under torchrun
        self._module: nn.Module = _BatchModule(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self._module = DDP(self._module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                               find_unused_parameters=model.codes is not None and model.encoder is not None)

        self.num_epochs: int | None = None  # defaults of train() (set by create_trainer_from_config)
        self.max_steps: int | None = None
        self.step = 0
        self.epoch = 0
        self.status = "idle"
        self.best_metric: float | None = None
        self.history: list[dict[str, Any]] = []
        self.position = DataPosition()
        self.stop = StopRequest()

    @property
    def events(self) -> EventWriter:
        return self.run_log.events

    # -- the loop ---------------------------------------------------------------------------
    def train(self, num_epochs: int | None = None, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until `num_epochs` epochs or `max_steps` optimizer steps in total (counting steps
        before a resume), whichever comes first; returns the history (one record per step).
        Without either, the trainer's `num_epochs` / `max_steps` attributes (from a config) apply.

        After it returns, `status` is 'ok' or 'cancelled' (stop requested by a signal or
        `request_stop`; `last` was saved when there is a checkpoint_dir).
        """
        num_epochs, max_steps, total = self._run_length(num_epochs, max_steps)
        self.run_log.start(device=self.device, parameters=sum(p.numel() for p in self.model.parameters()),
                           step=self.step, total=total, precision=self.precision)
        first_step, self.status, self.stop, self.converged = self.step, "running", StopRequest(), False
        if self.early_stopping is not None:
            self.early_stopping.start(self.model.parameters())
        signals = self.stop.on_signals() if self.handle_signals else contextlib.nullcontext()
        try:
            with signals:
                self.model.train()
                while not self._reached(num_epochs, max_steps) and not self.stop():
                    batches, seen = self.position.start_epoch(self.train_dataloader, self.epoch)
                    group: list[torch.Tensor] = []
                    self._step_started = time.perf_counter()
                    for batch in batches:
                        seen += 1
                        self.position.batches_in_epoch += 1
                        last_of_group = len(group) + 1 == self.accumulate_steps
                        group.append(self._forward_backward(batch, 1 / self.accumulate_steps, sync=last_of_group))
                        if len(group) == self.accumulate_steps:
                            stop = self._step(group, total)  # the flag every process agreed on
                            group = []
                            if stop or self._reached(None, max_steps):
                                break
                    else:  # the epoch ran out (a short accumulation group still makes a step)
                        if not seen:
                            raise ValueError("the training dataloader yielded no batches (is the dataset empty?)")
                        if group:
                            self._step(group, total)
                        self.epoch += 1
                        self.position.batches_in_epoch = 0
                        continue
                    break  # stopped mid-epoch, right after a step: a resume continues the epoch
        finally:
            self.run_log.close_bar()
        if self.early_stopping is not None:
            self.early_stopping.finish()
        self._finish(first_step)
        self.run_log.flush()  # after the final validation's scalars and meshes
        return self.history

    def _forward_backward(self, batch: dict, scale: float, sync: bool = True) -> torch.Tensor:
        """Loss of one batch with its gradients added (times `scale`, for accumulation); returns
        [loss, intersection, union, points], still on the device (one sync per step)."""
        batch = to_device(batch, self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        no_sync = self._module.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
        with no_sync:
            with autocast:
                logits = self._module(batch)
            logits = logits.float()
            target = batch.get("target", batch["occupancy"]).reshape(logits.shape).to(logits.dtype)
            loss = (loss_function(self.model)(logits, target) + self.model.regularization_loss(batch)
                    + self.model.distance_loss(logits, batch))
            self.scaler.scale(loss * scale).backward()
        with torch.no_grad():
            pred, true = logits >= 0, target > 0.5
            return torch.stack([loss.detach().float(), (pred & true).sum().float(), (pred | true).sum().float(),
                                torch.tensor(float(target.numel()), device=logits.device)])

    def _step(self, group: list[torch.Tensor], total: int | None) -> bool:
        """The optimizer step after a group of batches, then what follows a step: the history
        record, progress, validation and periodic checkpoints when due. Returns whether to stop,
        as every process agreed."""
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
        grad_norm = self._optimizer_step(len(group))
        if self.early_stopping is not None:
            self.early_stopping.update()
        loss, inter, union, points = torch.stack(group).sum(0).tolist()  # the one device sync per step
        compute_seconds = time.perf_counter() - self._step_started  # after the sync: the GPU's work too
        loss /= len(group)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} at step {self.step} (learning rate {lr:g}): training diverged "
                "and the weights are no longer usable; lower the learning rate (or enable gradient clipping) and "
                "train again. Checkpoints written before this step are intact")
        record = {"step": self.step, "epoch": self.epoch, "loss": loss, "iou": inter / union if union else 1.0, "lr": lr}
        if grad_norm is not None:
            record["grad_norm"] = grad_norm  # before clipping
        self.history.append(record)
        self.run_log.step(record, points, compute_seconds, total)
        stop = self._agreed_stop()
        if self.early_stopping is not None and not stop:
            self.converged = self.early_stopping.converged(self.step)
            if self.converged:
                log.info("converged after %d steps: held-out IoU %.4f", self.step, self.early_stopping.best)
        if self.val_dataloader is not None and self.val_every is not None and self.step % self.val_every == 0:
            self._run_validation(record)
        if (self.checkpoint_dir is not None and self.checkpoint_every is not None
                and self.step % self.checkpoint_every == 0 and not stop and self.step != total):
            self.save_checkpoint(kind="last")
        if stop:  # what the ranks agreed; never cleared here: a signal since `_agreed_stop` would be lost
            self.stop.request()
        self._step_started = time.perf_counter()
        return stop or self.converged

    def _optimizer_step(self, batches: int) -> float | None:
        """Returns the gradient norm when `grad_clip` is set."""
        if batches < self.accumulate_steps:  # a short group at the end of an epoch: the same mean
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.accumulate_steps / batches)
        grad_norm = None
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return grad_norm

    def _finish(self, first_step: int) -> None:
        """After the loop: every run ends validated and with `last` saved (also when cancelled)."""
        if self.dist.enabled:  # DDP broadcasts buffers before each forward: give all ranks rank 0's last
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer.data, src=0)
        self.status = "cancelled" if self.stop() else "ok"
        validated_now = self.val_every is not None and self.step % self.val_every == 0
        if self.status == "ok" and self.val_dataloader is not None and not validated_now and self.step > first_step:
            self._run_validation(self.history[-1] if self.history else {})
        if self.checkpoint_dir is not None and (self.step > first_step or self.status == "cancelled"):
            self.save_checkpoint(kind="last")
        if self.dist.enabled:
            # every rank leaves together, after rank 0 has written the checkpoint, so no rank tears
            # its process group down while another still works (rank 0 aborted at teardown once in
            # ~12 runs of tests/test_ddp.py: gloo's "terminate called without an active exception")
            torch.distributed.barrier()
        if self.status == "cancelled":
            log.warning("training cancelled at step %d", self.step)

    def _run_length(self, num_epochs: int | None, max_steps: int | None) -> tuple[int | None, int | None, int | None]:
        """(num_epochs, max_steps, total steps or None when the loader has no length)."""
        if num_epochs is None and max_steps is None:
            num_epochs, max_steps = self.num_epochs, self.max_steps
        if num_epochs is None and max_steps is None:
            raise ValueError("give num_epochs or max_steps (or both)")
        total = max_steps
        try:
            per_epoch = math.ceil(len(self.train_dataloader) / self.accumulate_steps)  # type: ignore[arg-type]
        except TypeError:
            per_epoch = None
        if num_epochs is not None and per_epoch is not None:
            total = num_epochs * per_epoch if total is None else min(total, num_epochs * per_epoch)
        if self.schedule.kind == "cosine":
            if total is None:
                raise ValueError("lr_schedule 'cosine' needs the run length: give max_steps (the dataloader has no len)")
            self.schedule.total_steps = total
        return num_epochs, max_steps, total

    def _reached(self, num_epochs: int | None, max_steps: int | None) -> bool:
        return self.converged or (num_epochs is not None and self.epoch >= num_epochs) or (max_steps is not None and self.step >= max_steps)

    def _agreed_stop(self) -> bool:
        """The stop flag, agreed by all ranks (one rank stopping alone would hang the others)."""
        if not self.dist.enabled:
            return self.stop()
        flag = torch.tensor([1.0 if self.stop() else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def request_stop(self) -> None:
        """Ask `train` to stop after the current step (what SIGINT/SIGTERM do); thread-safe."""
        self.stop.request()

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step on one batch (no accumulation, no history); returns its loss and IoU."""
        self.model.train()
        loss, inter, union, _ = self._forward_backward(batch, 1.0).tolist()
        self._optimizer_step(self.accumulate_steps)
        return {"loss": loss, "iou": inter / union if union else 1.0}

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Mean loss and IoU over the validation loader (eval mode, float32); {} without one."""
        if self.val_dataloader is None:
            return {}
        return validate(self.model, self.val_dataloader, self.device, loss_function(self.model))

    def _run_validation(self, record: dict[str, Any]) -> None:
        """Validate on rank 0 (without touching the training RNG), share the result with every
        rank so all take the same `best` decision, and save `best` when IoU improved."""
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            with preserved_rng():
                metrics = self.validate()
                mesh_dir = self.checkpoint_dir or self.log_dir  # never the working folder of a run that saves nothing
                if self.val_meshes > 0 and mesh_dir is not None:
                    batch = to_device(next(iter(self.val_dataloader)), self.device)
                    for i, (sid, mesh, path) in enumerate(validation_meshes(
                            self.model, batch, self.val_meshes, self.val_mesh_resolution, mesh_dir / "val_meshes", self.step)):
                        self.events.emit("mesh", shape_id=sid, path=str(path.resolve()), step=self.step)
                        self.run_log.mesh(f"val/mesh_{i}", mesh["vertices"], mesh["faces"], self.step)
        if self.dist.enabled:
            shared = [metrics]
            torch.distributed.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        if not metrics:
            return
        record.update(metrics)
        self.events.emit("metrics", step=self.step, **metrics)
        self.run_log.scalar("val/loss", metrics["val_loss"], self.step)
        self.run_log.scalar("val/iou", metrics["val_iou"], self.step)
        log.info("step %d validation: loss %.4f IoU %.4f", self.step, metrics["val_loss"], metrics["val_iou"])
        if self.best_metric is None or metrics["val_iou"] > self.best_metric:
            self.best_metric = metrics["val_iou"]
            if self.checkpoint_dir is not None:
                self.save_checkpoint(self.checkpoint_dir / "best.pt", kind="best")

    # -- checkpoints and resume -------------------------------------------------------------
    def _gather(self, obj: Any) -> list[Any]:
        if not self.dist.enabled:
            return [obj]
        out: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def _data_identity(self) -> dict | None:
        """What the training loader's dataset is (see the datasets' `identity()`), None for a
        dataset of the user's own that does not say."""
        identity = getattr(getattr(self.train_dataloader, "dataset", None), "identity", None)
        return identity() if callable(identity) else None

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to resume exactly (layout: occnet_backend.training.checkpoints)."""
        data = self._data_identity()
        shape_ids = getattr(getattr(self.train_dataloader, "dataset", None), "shape_ids", None)
        if shape_ids is None and data is not None:
            shape_ids = data.get("shape_ids")  # ShapeNet: ids in code order
        return {
            "format": checkpoints.TRAIN_FORMAT,
            **checkpoints.model_payload(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            **self.position.state(self.train_dataloader, self._gather),
            "best_metric": self.best_metric,
            "config": self.config,
            "history": [dict(r) for r in self.history],
            "shape_ids": list(shape_ids) if shape_ids is not None else None,
            "data": data,
            "world_size": self.dist.world_size,
            "torch_version": str(torch.__version__),
        }

    def save_checkpoint(self, path: str | Path | None = None, kind: str = "last") -> Path | None:
        """Write a checkpoint atomically (rank 0; every rank must call it under DDP). Returns the path."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("no checkpoint path: give path=... or construct the trainer with checkpoint_dir")
            path = self.checkpoint_dir / f"{kind}.pt"
        payload = self.checkpoint_payload()
        if not self.dist.is_main:
            return None
        path = checkpoints.save_checkpoint(path, payload)
        self.events.emit("checkpoint", path=str(Path(path).resolve()), kind=kind, step=self.step)
        log.info("saved %s checkpoint at step %d: %s", kind, self.step, path)
        return Path(path)

    def resume(self, path: str | Path, allow_different_data: bool = False) -> "OccupancyTrainer":
        """Load a training checkpoint: weights, optimizer, scheduler, scaler, counters, history and
        RNG states, so the next `train` call continues exactly where the saved run stopped.

        A checkpoint records what it was trained on; resuming on other data is refused (ValueError
        naming both) unless ``allow_different_data`` (fine-tuning, deliberately)."""
        payload = checkpoints.load_training_checkpoint(path, type(self.model).__name__, self._data_identity(),
                                                       allow_different_data)
        try:
            self.model.load_state_dict(checkpoints.stored_weights(payload))
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: does not fit this model/optimizer ({str(err).splitlines()[0]}); "
                             "use the same model and optimizer settings as the saved run") from None
        if payload.get("scheduler"):
            self.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.step, self.epoch = int(payload["step"]), int(payload["epoch"])
        self.best_metric = payload.get("best_metric")
        self.history = list(payload.get("history") or [])
        same_world = payload.get("world_size", 1) == self.dist.world_size
        self.position.load(payload, self.dist.rank if same_world else 0)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        return self
