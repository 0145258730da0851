"""OccupancyTrainer at full strength: resume, accumulation, losses, checkpoints, AMP, schedules, events."""

from __future__ import annotations

import io
import os
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from occnet_backend import FocalLoss, OccupancyNetwork, OccupancyTrainer, load_model
from occnet_backend.training.losses import BalancedFocalLoss
from occnet_backend.training.checkpoints import load_checkpoint
from occnet_backend.events import EventWriter
from occnet_backend.training import precision
from occnet_backend.training.schedule import LRSchedule


class SphereDataset(Dataset):
    """Cheap exact labels: points in [-0.6, 0.6]³, inside a sphere of radius 0.35; fresh per epoch."""

    def __init__(self, num_samples: int = 4, num_points: int = 256, seed: int = 0):
        self.num_samples, self.num_points, self.seed, self.epoch = num_samples, num_points, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i, self.epoch])
        pts = rng.uniform(-0.6, 0.6, (self.num_points, 3)).astype(np.float32)
        occ = (np.linalg.norm(pts, axis=1) <= 0.35).astype(np.float32)[:, None]
        return {"points": torch.from_numpy(pts), "occupancy": torch.from_numpy(occ), "shape_id": f"s{i}", "shape_index": i}


def tiny_model(**kw) -> OccupancyNetwork:
    return OccupancyNetwork(dim_hidden=16, num_layers=2, fourier_frequencies=8, **kw)


def make_trainer(tmp_path=None, seed=0, batch_size=2, **kw) -> OccupancyTrainer:
    torch.manual_seed(seed)
    loader = DataLoader(SphereDataset(num_samples=4), batch_size=batch_size, shuffle=True)
    if tmp_path is not None:
        kw.setdefault("checkpoint_dir", tmp_path / "ckpt")
    return OccupancyTrainer(tiny_model(), loader, device="cpu", progress_bar=False, **kw)


def stop_at(trainer: OccupancyTrainer, step: int) -> None:
    """Make `trainer` ask itself to stop once it has finished `step` (as SIGTERM would)."""
    original = trainer._optimizer_step

    def finish_and_stop(*args):
        out = original(*args)
        if trainer.step == step:
            trainer.request_stop()
        return out

    trainer._optimizer_step = finish_and_stop


def test_resume_continues_exactly_with_the_same_losses(tmp_path):
    straight = make_trainer(lr_schedule="cosine", warmup_steps=2, grad_clip=1.0)
    full = straight.train(max_steps=9)

    first = make_trainer(tmp_path, lr_schedule="cosine", warmup_steps=2, grad_clip=1.0)
    stop_at(first, 5)
    first.train(max_steps=9)  # interrupted mid-epoch (2 batches per epoch), like a cancelled run
    assert first.status == "cancelled"
    torch.manual_seed(1234)  # a resumed process starts from other RNG states
    np.random.seed(99)
    second = make_trainer(tmp_path, seed=77, lr_schedule="cosine", warmup_steps=2, grad_clip=1.0)
    second.resume(tmp_path / "ckpt" / "last.pt")
    assert second.step == 5 and len(second.history) == 5
    resumed = second.train(max_steps=9)
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-6, abs=1e-7)
    assert [r["lr"] for r in resumed] == pytest.approx([r["lr"] for r in full])
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_two_half_batches_accumulated_equal_one_full_batch():
    data = SphereDataset(num_samples=4, num_points=300)
    torch.manual_seed(0)
    model = tiny_model()
    twin = tiny_model()
    twin.load_state_dict(model.state_dict())
    full = OccupancyTrainer(model, DataLoader(data, batch_size=4), device="cpu", progress_bar=False)
    half = OccupancyTrainer(twin, DataLoader(data, batch_size=2), device="cpu", progress_bar=False, accumulate_steps=2)
    h_full, h_half = full.train(max_steps=3), half.train(max_steps=3)
    assert len(h_half) == 3 and half.step == 3
    assert [r["loss"] for r in h_half] == pytest.approx([r["loss"] for r in h_full], rel=1e-5)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_short_accumulation_group_at_epoch_end_still_steps():
    trainer = OccupancyTrainer(tiny_model(), DataLoader(SphereDataset(num_samples=3), batch_size=1), device="cpu",
                               progress_bar=False, accumulate_steps=2)
    trainer.train(num_epochs=2)
    assert trainer.step == 4 and trainer.epoch == 2  # ceil(3 / 2) steps per epoch


def test_focal_loss_changes_what_is_minimised():
    logits = torch.tensor([3.0, -2.0, 0.1, -0.1])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    focal = FocalLoss(alpha=0.25, gamma=2.0)(logits, target)
    assert focal < bce
    assert FocalLoss(alpha=1.0, gamma=0.0)(logits, target) == pytest.approx(bce.item())
    # the seed's formula: alpha * (1 - p_t)^gamma * BCE, computed here by hand
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    by_hand = (0.25 * (1 - p_t) ** 2 * -torch.log(p_t)).mean()
    assert focal == pytest.approx(by_hand.item(), rel=1e-5)
    # probabilities, as in the seed's example
    assert FocalLoss(from_logits=False)(p, target) == pytest.approx(focal.item(), rel=1e-5)
    # the class-balanced variant weighs inside alpha, outside 1 - alpha
    alpha_t = torch.where(target == 1, 0.25, 0.75)
    assert BalancedFocalLoss(0.25, 2.0)(logits, target) == pytest.approx(
        (alpha_t * (1 - p_t) ** 2 * -torch.log(p_t)).mean().item(), rel=1e-5)

    plain, focused = make_trainer(), make_trainer()
    focused.model.compute_loss = FocalLoss()
    a, b = plain.train(max_steps=2), focused.train(max_steps=2)
    assert a[0]["loss"] != pytest.approx(b[0]["loss"], rel=0.1)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)


def test_a_user_loss_receives_float32_probabilities_and_a_logits_loss_logits():
    seen = []

    def loss(pred, target):
        seen.append((pred.dtype, pred.shape == target.shape, bool(((pred >= 0) & (pred <= 1)).all())))
        return (pred - target).pow(2).mean()

    trainer = make_trainer(amp="bf16")
    trainer.model.compute_loss = loss
    trainer.train(max_steps=2)
    assert seen == [(torch.float32, True, True)] * 2

    logits_seen = []

    def logits_loss(logits, target):
        logits_seen.append(bool((logits.abs() > 1).any()) or bool((logits < 0).any()))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

    logits_loss.takes_logits = True
    trainer = make_trainer()
    trainer.model.compute_loss = logits_loss
    trainer.train(max_steps=2)
    assert logits_seen and any(logits_seen), "a takes_logits loss got probabilities"


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(tmp_path):
    trainer = make_trainer(tmp_path, val_every=None)
    trainer.val_dataloader = DataLoader(SphereDataset(num_samples=2, seed=5), batch_size=2)
    trainer.train(max_steps=4)
    for name in ("last.pt", "best.pt"):
        payload = torch.load(tmp_path / "ckpt" / name, weights_only=True)
        assert payload["format"] == "occnet-train-1" and payload["model_class"] == "OccupancyNetwork"
        assert payload["step"] == 4 and payload["optimizer"]["state"]
        assert {"torch", "numpy", "python"} <= set(payload["rng"]["current"][0])
    model = load_model(tmp_path / "ckpt" / "last.pt")
    assert isinstance(model, OccupancyNetwork) and not model.training
    points = torch.rand(50, 3) - 0.5
    torch.testing.assert_close(model.predict_logits(points), trainer.model.predict_logits(points))
    assert not list((tmp_path / "ckpt").glob("*.tmp")), "no temporary files left behind"


def test_corrupt_or_foreign_checkpoints_are_clear_errors(tmp_path):
    make_trainer(tmp_path).train(max_steps=1)
    good = (tmp_path / "ckpt" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated.pt: not a readable checkpoint"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a checkpoint written by occnet_backend"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    buffer = io.BytesIO()
    torch.save({"format": "occnet-train-1", "obj": LRSchedule()}, buffer)  # a class: weights_only refuses
    pickled.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="pickled.pt: refused: it holds Python objects") as info:
        load_checkpoint(pickled)
    assert "weights_only" not in str(info.value), "never suggest loading with weights_only=False"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "occnet-fit-1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt: refused: it holds Python objects \((posix|nt|os)\.system\)"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists(), "the pickle ran code"
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file"):
        load_model(tmp_path / "ckpt")
    # a flipped run of bytes inside a tensor record: torch would load it as garbage weights
    flipped = tmp_path / "flipped.pt"
    damaged = bytearray(good)
    start = len(good) // 2
    damaged[start:start + 400] = bytes(b ^ 0xFF for b in damaged[start:start + 400])
    flipped.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"flipped.pt: the checkpoint is corrupt \(record '.*' fails its CRC check"):
        load_model(flipped)
    other = OccupancyTrainer(OccupancyNetwork(dim_hidden=8, num_layers=1, fourier_frequencies=0),
                             DataLoader(SphereDataset(), batch_size=2), device="cpu")
    with pytest.raises(ValueError, match="does not fit this model"):
        other.resume(tmp_path / "ckpt" / "last.pt")


def test_lr_schedules_warm_up_then_decay():
    cos = LRSchedule("cosine", warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [cos(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cos(4) == pytest.approx(1.0) and cos(9) == pytest.approx(0.55) and cos(14) == pytest.approx(0.1)
    step = LRSchedule("step", step_size=3, gamma=0.5)
    assert [step(s) for s in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        LRSchedule("linear")
    with pytest.raises(ValueError, match="lr_step_size"):
        LRSchedule("step")
    trainer = make_trainer(lr_schedule="cosine", warmup_steps=2, optimizer="adamw", lr=1e-2)
    history = trainer.train(max_steps=6)
    lrs = [r["lr"] for r in history]
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2) and lrs[-1] < lrs[2]
    assert isinstance(trainer.optimizer, torch.optim.AdamW)


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_uses_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    trainer = make_trainer(amp="auto")
    assert trainer.amp_dtype == (torch.bfloat16 if native else None)
    assert not trainer.scaler.is_enabled()
    assert precision.resolve_amp("auto", torch.device("cuda")) == torch.float16


def test_bf16_autocast_on_cpu_trains_and_bad_amp_is_an_error():
    trainer = make_trainer(amp="bf16")
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    history = trainer.train(max_steps=3)
    assert all(math.isfinite(r["loss"]) for r in history)
    with pytest.raises(ValueError, match="amp must be one of"):
        make_trainer(amp="int8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        make_trainer(amp="fp16")


def test_gradient_clipping_bounds_the_update():
    trainer = make_trainer(grad_clip=1e-3, lr=1.0, optimizer=None)
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, trainer.schedule)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.train(max_steps=1)
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert (after - before).norm() <= 1e-3 + 1e-6
    assert trainer.history[-1]["grad_norm"] > 1e-3, "the gradient was clipped, not merely small"


def test_events_tensorboard_and_validation_meshes(tmp_path):
    stream = io.StringIO()
    trainer = make_trainer(tmp_path, events=EventWriter(stream, enabled=True), progress_every=2, val_every=2,
                           val_meshes=1, val_mesh_resolution=32, log_dir=tmp_path / "logs", checkpoint_every=2)
    trainer.val_dataloader = DataLoader(SphereDataset(num_samples=2, seed=9), batch_size=2)
    trainer.train(max_steps=4)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and events[0]["total_steps"] == 4 and events[0]["parameters"] > 0
    progress = [e for e in events if e["event"] == "progress"]
    steps = [p["step"] for p in progress]  # every progress_every steps (and every second on a slow machine)
    assert {2, 4} <= set(steps) and steps == sorted(set(steps)) and steps[-1] == 4
    assert {"loss", "iou", "points_per_s", "eta_s", "total"} <= set(progress[0]) and progress[-1]["eta_s"] == 0
    assert [e["step"] for e in events if e["event"] == "metrics"] == [2, 4]
    assert any(e["event"] == "mesh" and e["path"].endswith(".ply") for e in events)
    assert {e["kind"] for e in events if e["event"] == "checkpoint"} == {"best", "last"}
    assert "done" not in kinds, "the owning process emits done, not the trainer"
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert "val_iou" in trainer.history[1] and "val_iou" in trainer.history[3]


def test_request_stop_finishes_the_step_and_saves_last(tmp_path):
    trainer = make_trainer(tmp_path)
    stop_at(trainer, 3)
    trainer.train(max_steps=50)
    assert trainer.status == "cancelled" and trainer.step == 3
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["step"] == 3


def test_old_api_still_works():
    trainer = OccupancyTrainer(tiny_model(), DataLoader(SphereDataset(), batch_size=2), device="cpu")
    assert set(trainer.train_step(next(iter(trainer.train_dataloader)))) == {"loss", "iou"}
    history = trainer.train(num_epochs=2)
    assert len(history) == 4 and trainer.status == "ok" and trainer.epoch == 2


def test_a_diverging_run_stops_at_once_with_a_clear_message(tmp_path):
    """lr = 1e30: the loss turns non-finite; training stops there instead of running on to a NaN model."""
    from occnet_backend.training.trainer import NonFiniteLossError

    trainer = make_trainer(tmp_path, lr=1e30, val_every=None)
    with pytest.raises(NonFiniteLossError, match=r"the training loss became (nan|inf) at step \d+ \(learning rate 1e\+30\).*lower the learning rate"):
        trainer.train(max_steps=50)
    assert trainer.step < 50
    assert not (tmp_path / "ckpt" / "last.pt").exists(), "a diverged model was saved as the last checkpoint"
