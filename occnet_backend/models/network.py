"""Occupancy networks: f(x) -> logit that x lies inside the shape; f(x, c) for a shape with code c.

One class, `OccupancyNetwork`, built from parts (`occnet_backend.models.parts`): an input encoding,
a residual decoder, and, for several shapes, where their codes come from:

- a **per-shape code table** (auto-decoder, as in DeepSDF): shape i of the training set owns a
  learned row of `codes`; a batch that carries ``'shape_index'`` uses those rows. This is what the
  Blender add-on fits for 2–10 selected meshes, on a shared feature grid whose logits are kept a
  signed distance, so the shape sliders blend the shapes' fields (`blends_fields`);
- a **PointNet encoder** (the paper's ONet): ``encode_shape(points, occupancy)`` turns labelled
  points of a shape into its code, so unseen shapes get a code without any optimisation.

`ConditionalOccupancyNetwork` is the same class with the seed's argument order and a code by
default. The trainer talks to every model through the same three methods (`forward_batch`,
`regularization_loss`, `compute_loss`), and `fit`, `eval` and `serve` through `logit_fn`.

Batch format (what `OccupancyTrainer` hands to `forward_batch`): ``{'points': [B, N, 3],
'occupancy': [B, N, 1], 'shape_index': [B]}`` for the code table, or, for the encoder,
``'inputs'`` [B, M, 3] + ``'inputs_occupancy'`` [B, M(, 1)] (when absent, a random subset of the
batch's own labelled points is encoded).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from occnet_backend.extraction import CachedField, FieldBlend
from occnet_backend.models.parts import (CONDITIONINGS, NORMS, FourierFeatures, HashGridEncoding, PointNetEncoder,
                                         ResnetDecoder)
from occnet_contract.settings import TRAIN_BOX, FitSettings

DEFAULTS = FitSettings()

ENCODERS = ("pointnet",)
ENCODINGS = ("fourier", "grid")
DISTANCE_WEIGHT = 1.0
"""Weight of `distance_loss` (unit-cube distance): at 1 the 4-shape model stays within 0.01 IoU of
single fits while its blends lose most specks; at 10 it trails them by up to 0.01 more (BENCHMARKS.md)."""
GRID_LR_FACTOR = 10.0
"""A grid network learns at 10x the rate a Fourier network does (1e-2 at fit's default 1e-3, as
Instant-NGP trains): at 1e-3 a fit of 20 steps is still empty (BENCHMARKS.md)."""


def _flatten_points(points: torch.Tensor, dim_input: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    if points.ndim not in (2, 3) or points.shape[-1] != dim_input:
        raise ValueError(
            f"points must have shape [N, {dim_input}] or [B, N, {dim_input}], got {tuple(points.shape)}"
        )
    return points.reshape(-1, dim_input), tuple(points.shape[:-1])


class OccupancyNetwork(nn.Module):
    """Occupancy network for one shape, or, with ``dim_condition > 0``, for shapes given by codes.

    Args:
        dim_input: coordinates per point (3).
        dim_hidden: width of every residual block.
        num_layers: number of residual blocks.
        use_batch_norm: batch norm inside the blocks of an unconditioned network (the paper's
            decoder uses it; with one shape and many points per batch it mostly adds cost, hence off).
        dropout_prob: dropout inside the blocks.
        fourier_frequencies: number of random Fourier features (0 turns the encoding off).
        fourier_scale: standard deviation of the Fourier frequencies, in cycles per unit.
            Defaults measured by bench/fourier.py (BENCHMARKS.md): 64 at σ 2 reaches IoU 0.98 on
            Suzanne in ~8 s where the plain network needs 300 steps for 0.93; σ 4 grows floaters.
            Train with uniform points in a box a little larger than the extraction box
            ([-0.6, 0.6]³ for [-0.55, 0.55]³), or blobs appear at the box border.
        chunk_size: points per forward pass in `predict_logits` (bounds inference memory). 8192
            keeps a width-128 layer's activations (4 MB) in cache: 124k points took 0.29 s on
            2 CPU cores vs 0.40 s in chunks of 65536 (the cost on a GPU is a few more launches).
        dim_condition: size of a shape code; 0 for an unconditioned network.
        num_shapes: rows of the learned code table (auto-decoder); 0 for none.
        encoder: 'pointnet' or None. Default: a PointNet when a conditioned network has no code
            table, none otherwise (an encoder that never trains would only cost time and confuse DDP).
        norm: conditional normalisation: 'batch' (conditional batch norm, the paper's), 'none'
            (FiLM only) or 'auto' ('batch' with an encoder, else 'none'). Measured on 2/4/8
            synthetic shapes, 300 steps × 8192 points (BENCHMARKS.md): 'none' reaches IoU
            0.986/0.977/0.959 vs 0.982/0.971/0.935 for 'batch', ~15% faster, and eval equals train
            mode exactly (no running statistics), which the fit -> serve path relies on.
        code_init_std: initial std of the code table's entries (DeepSDF uses 1/sqrt(dim)).
        code_regularization: weight λ of λ·mean‖c‖² added to the training loss for table codes
            (DeepSDF's prior): keeps codes in a compact region so blends stay meaningful.
        encoder_points: labelled points encoded per shape when a batch has no 'inputs'.
        encoding: 'fourier' (random Fourier features, the default) or 'grid' (a multi-resolution
            grid of learned features, `parts.HashGridEncoding`, over the training box): what
            `fit` uses for one shape, converging in seconds on a CPU (BENCHMARKS.md).
        distance_scale: set when the network is trained on soft targets sigmoid(-sdf / scale):
            its logits then approximate -sdf / scale, which lets extraction refine near thin
            parts (`extraction.mise_grid`). None for 0/1 labels.
        grid_features: features per level of the grid encoding.
        grid_resolution: cells per side of the grid's finest level (over the training box).
        conditioning: where the decoder takes the code, `parts.CONDITIONINGS`: 'norm' (its first
            hidden layer and the normalisations' scale and shift, per `norm`) or 'input' (its first
            hidden layer only; what `fit` builds for several shapes on a grid).
        shape_rows: a grid of several learned shapes gives each shape rows of its own
            (`parts.HashGridEncoding`'s `shapes`; what `fit` builds). Such a model takes its shapes by
            `shape_index` or `weights` (a code that is no learned shape's has no rows).
    """

    def __init__(
        self,
        dim_input: int = 3,
        dim_hidden: int = 128,
        num_layers: int = 5,
        use_batch_norm: bool = False,
        dropout_prob: float = 0.0,
        fourier_frequencies: int = 64,
        fourier_scale: float = 2.0,
        chunk_size: int = 8192,
        *,
        dim_condition: int = 0,
        num_shapes: int = 0,
        encoder: str | None = None,
        norm: str = "auto",
        code_init_std: float | None = None,
        code_regularization: float = 1e-4,
        encoder_points: int = 1024,
        encoding: str = "fourier",
        distance_scale: float | None = None,
        grid_features: int = 2,
        grid_resolution: int = 256,
        conditioning: str = "norm",
        shape_rows: bool = False,
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if distance_scale is not None and not distance_scale > 0:
            raise ValueError(f"distance_scale must be > 0 or None, got {distance_scale}")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if isinstance(grid_features, bool) or not isinstance(grid_features, int) or grid_features < 1:
            raise ValueError(f"grid_features must be an integer >= 1 (features per grid level), got {grid_features!r}")
        if isinstance(grid_resolution, bool) or not isinstance(grid_resolution, int) or not 16 <= grid_resolution <= 1024:
            raise ValueError(f"grid_resolution must be an integer in [16, 1024] (cells of the grid's finest level), "
                             f"got {grid_resolution!r}")
        if not isinstance(shape_rows, bool) or (shape_rows and (encoding != "grid" or num_shapes < 1)):
            raise ValueError(f"shape_rows must be true or false, and true only for a grid encoding with a code table, "
                             f"got {shape_rows!r}")
        if dim_hidden < 1 or num_layers < 1 or dim_condition < 0:
            raise ValueError(f"dim_hidden and num_layers must be >= 1 and dim_condition >= 0, got {dim_hidden}, "
                             f"{num_layers}, {dim_condition}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob}")
        if num_shapes < 0:
            raise ValueError(f"num_shapes must be >= 0 (0: no code table), got {num_shapes}")
        if norm not in (*NORMS, "auto"):
            raise ValueError(f"norm must be one of {(*NORMS, 'auto')}, got {norm!r}")
        if dim_condition and encoder is None and num_shapes == 0:
            encoder = "pointnet"
        if encoder not in (None, *ENCODERS):
            raise ValueError(f"encoder must be one of {ENCODERS} or None, got {encoder!r}")
        if not dim_condition and (num_shapes or encoder):
            raise ValueError("a code table or an encoder needs dim_condition > 0 (the size of a shape code)")
        if not dim_condition:
            norm = "batch" if use_batch_norm else "none"
        elif norm == "auto":
            norm = "batch" if encoder is not None else "none"
        if dim_condition and code_init_std is None:
            code_init_std = 1.0 / math.sqrt(dim_condition)
        self.config: dict[str, Any] = dict(
            dim_input=dim_input, dim_hidden=dim_hidden, num_layers=num_layers, dropout_prob=dropout_prob,
            fourier_frequencies=fourier_frequencies, fourier_scale=fourier_scale, chunk_size=chunk_size,
        )
        if encoding != "fourier":  # absent from checkpoints written before the grid existed
            self.config.update(encoding=encoding)
        if encoding == "grid":  # absent from checkpoints written before they could be chosen: 2 and 256
            self.config.update(grid_features=grid_features, grid_resolution=grid_resolution)
        if distance_scale is not None:
            self.config.update(distance_scale=float(distance_scale))
        self.distance_scale = distance_scale
        if dim_condition:
            self.config.update(dim_condition=dim_condition, num_shapes=num_shapes, encoder=encoder, norm=norm,
                               code_init_std=code_init_std, code_regularization=code_regularization,
                               encoder_points=encoder_points)
            if conditioning != "norm":  # absent from checkpoints written before it could be chosen: 'norm'
                self.config.update(conditioning=conditioning)
            if shape_rows:  # absent from checkpoints written before it could be chosen: shared rows
                self.config.update(shape_rows=True)
        else:
            self.config.update(use_batch_norm=use_batch_norm)
        self.dim_input = dim_input
        self.dim_condition = dim_condition
        self.num_shapes = num_shapes
        self.code_regularization = code_regularization
        self.encoder_points = encoder_points
        self.chunk_size = chunk_size

        # built in this order so that a seed gives the same initial weights as the two-class layout did
        self.codes: nn.Embedding | None = nn.Embedding(num_shapes, dim_condition) if num_shapes else None
        if self.codes is not None:
            nn.init.normal_(self.codes.weight, 0.0, code_init_std)
        self.encoder = PointNetEncoder(dim_condition, dim_hidden) if encoder == "pointnet" else None
        if encoding == "grid":
            self.encoding: nn.Module = HashGridEncoding(dim_input, features=grid_features, box=TRAIN_BOX,
                                                        finest_resolution=grid_resolution,
                                                        shapes=num_shapes if shape_rows else 1)
            dim_encoded = self.encoding.dim_output
        elif fourier_frequencies > 0:
            self.encoding = FourierFeatures(dim_input, fourier_frequencies, fourier_scale)
            dim_encoded = self.encoding.dim_output
        else:
            self.encoding = nn.Identity()
            dim_encoded = dim_input
        self.decoder = ResnetDecoder(dim_encoded, dim_hidden, num_layers, dim_condition, norm, dropout_prob,
                                     conditioning)

    # -- codes ------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.dim_condition > 0

    def _device(self) -> torch.device:
        return self.decoder.fc_out.weight.device

    def encode_shape(self, points: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        """Code of a shape from labelled points: [M, 3] + [M(, 1)] -> [C]; [B, M, 3] -> [B, C]."""
        if self.encoder is None:
            raise ValueError(
                f"this model has a code table of {self.num_shapes} shapes and no encoder; build it with "
                "encoder='pointnet' to encode unseen shapes, or use learned_codes() / blend_codes(weights)"
            )
        points = torch.as_tensor(points, dtype=torch.float32, device=self._device())
        occupancy = torch.as_tensor(occupancy, dtype=points.dtype, device=points.device)
        single = points.ndim == 2
        if single:
            points = points.unsqueeze(0)
            occupancy = occupancy.unsqueeze(0)
        if points.ndim != 3 or points.shape[-1] != self.dim_input:
            raise ValueError(f"points must have shape [M, {self.dim_input}] or [B, M, {self.dim_input}], got {tuple(points.shape)}")
        occupancy = occupancy.reshape(points.shape[:-1])
        code = self.encoder(points, occupancy)
        return code[0] if single else code

    def learned_codes(self) -> torch.Tensor:
        """The code table [num_shapes, C] (detached): row i is training shape i's code."""
        if self.codes is None:
            raise ValueError("this model has no code table (num_shapes=0); encode shapes with encode_shape()")
        return self.codes.weight.detach()

    def blend_codes(self, weights: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Σ wᵢ·codeᵢ over the learned codes, weights normalised to sum to 1 -> code [C].

        A one-hot weight gives a training shape back exactly; anything between is a point of the
        code space (what `weights=` means for a model that does not `blends_fields`).
        """
        codes = self.learned_codes()
        return self._blend_weights(weights).to(codes.dtype).to(codes.device) @ codes

    def _blend_weights(self, weights: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Weights over the learned shapes, validated and normalised to sum to 1 (float64)."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=torch.float64).reshape(-1)
        if w.numel() != self.num_shapes or not torch.isfinite(w).all():
            raise ValueError(f"weights must be {self.num_shapes} finite numbers (one per learned shape), got {list(np.asarray(weights).reshape(-1))}")
        if abs(float(w.sum())) < 1e-12:
            raise ValueError("weights must not sum to 0 (they are normalised to sum to 1)")
        return w / w.sum()

    @property
    def blends_fields(self) -> bool:
        """Whether `weights=` blends this model's shapes by their fields, Σ wᵢ·f(x, codeᵢ), rather
        than by their codes. A model whose logits are signed distances (`distance_scale`, trained
        with `distance_loss`) does: a blend of distances is a morph whose surface moves smoothly
        from one shape to the other, where a blend of codes asks the decoder for codes it never
        trained on (floating parts and spikes: bench/morph.py, BENCHMARKS.md)."""
        return self.codes is not None and self.distance_scale is not None

    def condition_for_batch(self, batch: dict) -> torch.Tensor | None:
        """Codes [B, C] for a training batch: table rows for 'shape_index', else the encoder's; None
        for an unconditioned network."""
        if not self.conditional:
            return None
        if self.codes is not None and "shape_index" in batch:
            index = torch.as_tensor(batch["shape_index"], device=self._device()).long().reshape(-1)
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= self.num_shapes):
                raise ValueError(
                    f"shape_index {index.tolist()} out of range for a code table of {self.num_shapes} shapes; "
                    "build the model with num_shapes = the number of training shapes"
                )
            return self.codes(index)
        if self.encoder is None:
            raise ValueError("the batch has no 'shape_index' and this model has no encoder: nothing to condition on")
        if "inputs" in batch:
            return self.encode_shape(batch["inputs"], batch["inputs_occupancy"])
        points, occupancy = batch["points"], batch["occupancy"].reshape(batch["points"].shape[:-1])
        count = min(self.encoder_points, points.shape[1])
        pick = torch.randint(points.shape[1], (points.shape[0], count), device=points.device)
        gather = torch.gather(points, 1, pick.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
        return self.encode_shape(gather, torch.gather(occupancy, 1, pick))

    # -- the network ------------------------------------------------------------------------
    def forward(self, query_points: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of occupancy: [N, 3] -> [N], [B, N, 3] -> [B, N]. A conditioned network takes
        ``condition``: one code [C] for all points, or codes [B, C] for [B, N, 3]."""
        flat, lead = _flatten_points(query_points, self.dim_input)
        points = flat.reshape(1, -1, self.dim_input) if len(lead) == 1 else flat.reshape(lead[0], lead[1], -1)
        c = self._codes_for(points, condition, query_points.shape) if self.conditional else None
        if getattr(self.encoding, "shapes", 1) > 1:
            shape = self._shape_of(c).repeat_interleave(points.shape[1])
            return self.decoder(self.encoding(points, shape), c).reshape(lead)
        return self.decoder(self.encoding(points), c).reshape(lead)

    def _shape_of(self, codes: torch.Tensor) -> torch.Tensor:
        """The learned shape [B] each code [B, C] is (a model with `shape_rows`: its grid rows are per shape)."""
        same = (codes.detach()[:, None, :] == self.codes.weight.detach().to(codes.dtype)[None]).all(-1)
        if not same.any(1).all():
            raise ValueError("this model keeps each learned shape's own grid rows: give shape_index=i or weights=[...] "
                             "(a code that is no learned shape's has no rows of its own)")
        return same.int().argmax(1)

    def _codes_for(self, points: torch.Tensor, condition: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
        if condition is None:
            if self.num_shapes != 1:
                raise ValueError("give condition=code (from encode_shape, learned_codes or blend_codes)")
            condition = self.codes.weight[0]
        c = condition.to(points.dtype) if condition.is_floating_point() else condition.float()
        if c.ndim == 1:
            c = c.unsqueeze(0).expand(points.shape[0], -1)
        if c.shape != (points.shape[0], self.dim_condition):
            raise ValueError(f"condition must have shape [{self.dim_condition}] or [B, {self.dim_condition}] matching "
                             f"{tuple(shape)}, got {tuple(condition.shape)}")
        return c

    def forward_batch(self, batch: dict) -> torch.Tensor:
        """Logits [B, N] for a training batch (the trainer's entry point; see the module docstring)."""
        return self(batch["points"], condition=self.condition_for_batch(batch))

    def regularization_loss(self, batch: dict) -> torch.Tensor:
        """λ·mean‖c‖² over the batch's table codes (0 without a table or for encoder batches)."""
        if self.codes is None or "shape_index" not in batch or self.code_regularization == 0:
            return self.decoder.fc_out.bias.new_zeros(())
        codes = self.codes(torch.as_tensor(batch["shape_index"], device=self._device()).long().reshape(-1))
        return self.code_regularization * codes.pow(2).sum(-1).mean()

    def distance_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """DISTANCE_WEIGHT·mean|scale·logit + sdf| for a model that `blends_fields`, when the batch
        carries the signed distance ('sdf'), else 0. The soft targets' loss alone leaves logits
        arbitrary beyond a few `distance_scale` from the surface (its gradient vanishes there), and a
        blend of two shapes' fields puts its surface exactly there."""
        if not self.blends_fields or "sdf" not in batch:
            return logits.new_zeros(())
        sdf = batch["sdf"].reshape(logits.shape).to(logits.dtype)
        return DISTANCE_WEIGHT * (logits * self.distance_scale + sdf).abs().mean()

    def parameter_groups(self, lr: float) -> list[dict]:
        """The optimizer's parameter groups: a grid network learns at GRID_LR_FACTOR x `lr`, its
        feature table with Adam's eps at 1e-15 (its gradients are tiny and sparse)."""
        if not isinstance(self.encoding, HashGridEncoding):
            return [{"params": list(self.parameters()), "lr": lr}]
        table = self.encoding.table
        rest = [p for p in self.parameters() if p is not table]
        return [{"params": rest, "lr": lr * GRID_LR_FACTOR},
                {"params": [table], "lr": lr * GRID_LR_FACTOR, "eps": 1e-15}]

    def __setattr__(self, name: str, value: Any) -> None:
        # `model.compute_loss = FocalLoss()` must replace the method: nn.Module would file a Module
        # value under _modules, where this class's method shadows it and the assignment is lost.
        if name == "compute_loss":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def compute_loss(self, logits: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        """Training loss on logits (BCE). Assign another callable `(logits, target) -> loss` (e.g.
        `FocalLoss()`) to `model.compute_loss` to change what the trainer minimises."""
        return F.binary_cross_entropy_with_logits(logits, occupancy.reshape(logits.shape).to(logits.dtype))

    # -- inference --------------------------------------------------------------------------
    def _resolve_condition(self, condition: Any = None, weights: Any = None, shape_index: int | None = None) -> torch.Tensor | None:
        """The one shape inference is about: a code [C], weights over the learned codes, or an index;
        None for an unconditioned network (its only shape, index 0)."""
        given = sum(x is not None for x in (condition, weights, shape_index))
        if given > 1:
            raise ValueError("give one of condition=code, weights=[...] or shape_index=i, not several")
        if not self.conditional:
            if condition is not None or (shape_index not in (None, 0)) or (weights is not None and len(weights) != 1):
                raise ValueError("this network has one shape and takes no code (condition, weights or shape_index)")
            return None
        if weights is not None:
            return self.blend_codes(weights)
        if shape_index is not None:
            codes = self.learned_codes()
            if not 0 <= int(shape_index) < len(codes):
                raise ValueError(f"shape_index must be in [0, {len(codes)}), got {shape_index}")
            return codes[int(shape_index)]
        if condition is None:
            if self.num_shapes == 1:
                return self.learned_codes()[0]
            raise ValueError("give condition=code, weights=[one per learned shape] or shape_index=i")
        code = torch.as_tensor(condition, dtype=torch.float32, device=self._device())
        if code.shape != (self.dim_condition,):
            raise ValueError(f"condition must be one code of shape [{self.dim_condition}], got {tuple(code.shape)}")
        return code

    def _resolve_terms(self, condition: Any = None, weights: Any = None,
                       shape_index: int | None = None) -> list[tuple[float, torch.Tensor]] | None:
        """The shape as (weight, code) terms whose logits add up: one term with weight 1, or for a
        field blend (`blends_fields`) one per shape of non-zero weight; None for an unconditioned
        network."""
        code = self._resolve_condition(condition, weights, shape_index)
        if code is None:
            return None
        if weights is None or not self.blends_fields:
            return [(1.0, code.detach().clone())]
        codes = self.learned_codes()
        return [(float(w), codes[i].clone()) for i, w in enumerate(self._blend_weights(weights).tolist()) if w != 0]

    def _blend(self, terms: list[tuple[float, torch.Tensor]], chunk_size: int | None = None) -> FieldBlend:
        """A blend of several shapes (`blends_fields`) as the sliders extract it: each shape's own field,
        weighted, inflated to the shapes' mean volume (`extraction.FieldBlend`)."""
        return FieldBlend([(w, CachedField(lambda p, c=code: self._predict(p, c, chunk_size))) for w, code in terms],
                          self.distance_scale)

    @torch.no_grad()
    def _predict(self, points: torch.Tensor | Any, code: torch.Tensor | None,
                 chunk_size: int | None = None) -> torch.Tensor:
        """`predict_logits` of one code (None: an unconditioned network's only shape)."""
        code = code.to(self._device()) if code is not None else None
        param = self.decoder.fc_out.weight
        flat, lead = _flatten_points(torch.as_tensor(points, dtype=torch.float32), self.dim_input)
        chunk_size = int(chunk_size or self.chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        was_training = self.training
        self.eval()
        try:
            out = torch.empty(len(flat), dtype=torch.float32)
            for start in range(0, len(flat), chunk_size):
                chunk = flat[start : start + chunk_size].to(param.device, param.dtype)
                logits = self(chunk) if code is None else self(chunk, condition=code)
                out[start : start + chunk_size] = logits.float().cpu()
        finally:
            self.train(was_training)
        return out.reshape(lead)

    def predict_logits(self, points: torch.Tensor | Any, condition: Any = None, chunk_size: int | None = None,
                       weights: Any = None, shape_index: int | None = None) -> torch.Tensor:
        """Logits of one shape for any number of points in chunks of `chunk_size` (bounded
        memory), as float32 on the CPU. The shape is `condition` (a code [C]), `weights` over the
        learned shapes (see `blends_fields`), or `shape_index` (nothing for an unconditioned
        network). Runs in eval mode (deterministic with dropout and batch norm) and restores the mode."""
        return torch.as_tensor(self.logit_fn(condition, weights, shape_index, chunk_size)(points))

    def predict_probability(self, points: torch.Tensor | Any, condition: Any = None, **kwargs: Any) -> torch.Tensor:
        """Occupancy probabilities in [0, 1] of one shape (see `predict_logits`)."""
        return torch.sigmoid(self.predict_logits(points, condition, **kwargs))

    def logit_fn(self, condition: Any = None, weights: Any = None, shape_index: int | None = None,
                 chunk_size: int | None = None) -> Callable:
        """points [N, 3] -> logits [N] of one fixed shape: what `extraction.extract_mesh` takes; a blend of
        several shapes is an `extraction.FieldBlend`, which it extracts as the sliders do. The shape is
        resolved here, once: a bad shape fails here, not at the first call."""
        terms = self._resolve_terms(condition, weights, shape_index)
        if terms is not None and len(terms) > 1:
            return self._blend(terms, chunk_size)
        code = None if terms is None else terms[0][1]
        return lambda pts: self._predict(pts, code, chunk_size)

    def extract_mesh(self, resolution: int = DEFAULTS.resolution, threshold: float = DEFAULTS.threshold, condition: Any = None, weights: Any = None,
                     shape_index: int | None = None, method: str = "mise", **kwargs: Any) -> dict:
        """Marching-cubes mesh of {x : p(x) >= threshold} in [-0.55, 0.55]³ (unit-cube coordinates)
        of one shape (nothing, a code, weights over the learned codes, or an index). A blend of a model
        that `blends_fields` is extracted as `serve`'s sliders extract it (`extraction.FieldBlend`).

        See `occnet_backend.extraction.extract_mesh` for the other arguments and the result.
        """
        from occnet_backend.extraction import blend_options, extract_mesh

        fn = self.logit_fn(condition, weights, shape_index, chunk_size=kwargs.pop("chunk_size", None))
        kwargs.setdefault("distance_scale", self.distance_scale)
        for key, value in blend_options(weights).items():
            kwargs.setdefault(key, value)
        return extract_mesh(fn, resolution=resolution, threshold=threshold, method=method, **kwargs)

    def interpolate(self, start: Any, end: Any, steps: int = 5, **kwargs: Any) -> list[dict]:
        """See `interpolate_shapes`."""
        return interpolate_shapes(self, start, end, steps, **kwargs)


class ConditionalOccupancyNetwork(OccupancyNetwork):
    """`OccupancyNetwork` conditioned on a shape code, with the seed's arguments: a 128-value code
    from a learned table (``num_shapes``) or from a PointNet encoder (the default without a table)."""

    def __init__(
        self,
        dim_input: int = 3,
        dim_condition: int = 128,
        dim_hidden: int = 128,
        num_layers: int = 5,
        num_shapes: int = 0,
        encoder: str | None = None,
        norm: str = "auto",
        dropout_prob: float = 0.0,
        fourier_frequencies: int = 64,
        fourier_scale: float = 2.0,
        code_init_std: float | None = None,
        code_regularization: float = 1e-4,
        encoder_points: int = 1024,
        chunk_size: int = 8192,
        encoding: str = "fourier",
        distance_scale: float | None = None,
        grid_features: int = 2,
        grid_resolution: int = 256,
        conditioning: str = "norm",
        shape_rows: bool = False,
    ):
        if dim_condition < 1:
            raise ValueError(f"dim_condition must be >= 1, got {dim_condition}")
        super().__init__(dim_input, dim_hidden, num_layers, dropout_prob=dropout_prob,
                         fourier_frequencies=fourier_frequencies, fourier_scale=fourier_scale, chunk_size=chunk_size,
                         dim_condition=dim_condition, num_shapes=num_shapes, encoder=encoder, norm=norm,
                         code_init_std=code_init_std, code_regularization=code_regularization,
                         encoder_points=encoder_points, encoding=encoding, distance_scale=distance_scale,
                         grid_features=grid_features, grid_resolution=grid_resolution, conditioning=conditioning,
                         shape_rows=shape_rows)


def _as_code(model: OccupancyNetwork, value: Any) -> torch.Tensor:
    if isinstance(value, (int, np.integer)):
        return model._resolve_condition(shape_index=int(value))
    return model._resolve_condition(condition=value)


def interpolate_shapes(model: OccupancyNetwork, start: Any, end: Any, steps: int = 5, resolution: int = 64,
                       threshold: float = 0.5, method: str = "mise", **kwargs: Any) -> list[dict]:
    """Meshes along the straight line between two shapes, `steps` of them including both ends.

    `start` and `end` are codes [C] or indices into the learned code table. Between two indices of
    a model that `blends_fields`, the line runs through the shapes' blended fields (``'weights'``
    added to each result); otherwise through their codes (``'code'``, a CPU tensor, added). Each
    result is `extract_mesh`'s, with ``'t'`` (0 → 1). A morph between shapes of different topology
    is what shape keys cannot do.
    """
    if not model.conditional:
        raise ValueError("interpolation needs a conditioned network (dim_condition > 0): one shape has nothing to morph to")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both ends are included), got {steps}")
    by_field = model.blends_fields and all(isinstance(x, (int, np.integer)) for x in (start, end))
    a, b = _as_code(model, start), _as_code(model, end)
    out = []
    for t in np.linspace(0.0, 1.0, steps):
        if by_field:
            weights = np.zeros(model.num_shapes)
            weights[int(start)] += 1 - float(t)
            weights[int(end)] += float(t)
            mesh = model.extract_mesh(resolution, threshold, weights=weights, method=method, **kwargs)
            mesh.update(t=float(t), weights=weights)
        else:
            code = (1 - float(t)) * a + float(t) * b
            mesh = model.extract_mesh(resolution, threshold, condition=code, method=method, **kwargs)
            mesh.update(t=float(t), code=code.detach().cpu())
        out.append(mesh)
    return out
