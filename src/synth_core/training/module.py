"""One LightningModule that trains any :class:`~synth_core.methods.Method`.

Single-optimiser methods use Lightning's automatic optimisation (``losses``);
adversarial ones use manual optimisation (``adversarial_step``) through a
:class:`GuardedSteps` context that applies the NaN guard and gradient clipping.
Validation translates whole held-out volumes (in the sliding windows ``translate`` uses
when the model trained on patches) and logs MAE, PSNR and SSIM in the normalised
intensity space (data range 2), inside the brain mask.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from synth_core import metrics
from synth_core.errors import UserError
from synth_core.methods import (
    Method,
    SynthesisRequest,
    patch_window,
    synthesize_slices,
    synthesize_windows,
)
from synth_core.nn import EMA

NORMALISED_RANGE = 2.0  # normalised intensities span about [-1, 1]


class TrainingDiverged(UserError):
    """Too many non-finite (or, by the method's own test, diverged) losses in a row."""


class GuardedSteps:
    """The ``StepContext`` handed to ``Method.adversarial_step``."""

    def __init__(self, module: SynthesisModule) -> None:
        self.module = module
        self.skipped = False

    @property
    def global_step(self) -> int:
        return self.module.batches_done

    def optimize(self, index: int, loss: torch.Tensor) -> bool:
        if not torch.isfinite(loss.detach()).all():
            self.skipped = True
            return False
        optimizers = self.module.optimizers()
        opt = optimizers[index] if isinstance(optimizers, list) else optimizers
        opt.zero_grad(set_to_none=True)
        self.module.manual_backward(loss)
        clip = self.module.method.config.train.grad_clip
        if clip > 0:
            self.module.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt.step()
        return True


class SynthesisModule(pl.LightningModule):
    """Wraps a Method for Lightning.

    Args:
        method: the method to train.
        nan_patience: bad steps in a row (a non-finite loss, or one the method's
            ``diverged`` rejects) before the run stops with an error.
    """

    def __init__(self, method: Method, nan_patience: int = 5) -> None:
        super().__init__()
        self.method = method
        self.automatic_optimization = not method.capabilities.adversarial
        self.nan_patience = nan_patience
        self.bad_in_a_row = 0
        # A resumed run asked for another learning rate: Lightning restores the optimisers'
        # own (in their state and the schedulers' base rates), so it is rescaled after that.
        self.lr_scale = 1.0
        self.batches_done = 0
        self.last_losses: dict[str, float] = {}
        self.seen_indices: list[tuple[int, int]] = []  # (epoch, dataset index), for the DDP test
        decay = method.config.train.ema_decay
        self.ema = EMA(method, decay, warmup=method.config.train.ema_warmup,
                       copied=method.ema_copied) if decay > 0 else None
        self._val_scores: list[dict[str, float]] = []

    # -- optimisation -----------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizers = self.method.configure_optimizers()
        schedulers = [
            {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, self.method.lr_lambda), "interval": "step"}
            for opt in optimizers
        ]
        if self.automatic_optimization:
            return {"optimizer": optimizers[0], "lr_scheduler": schedulers[0]}
        return optimizers, schedulers

    def on_train_start(self) -> None:
        if self.lr_scale == 1.0:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [rate * self.lr_scale for rate in scheduler.base_lrs]
            for group in scheduler.optimizer.param_groups:
                group["initial_lr"] *= self.lr_scale
                group["lr"] *= self.lr_scale

    def on_train_epoch_start(self) -> None:
        dataset = self.trainer.train_dataloader.dataset if self.trainer.train_dataloader else None
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.seen_indices.extend((self.current_epoch, int(i))
                                 for i in torch.as_tensor(batch["index"]).flatten())
        if self.automatic_optimization:
            losses = self.method.losses(batch)
            problem = None if torch.isfinite(losses["loss"].detach()) else "non-finite losses"
            problem = problem or self.method.diverged(losses)
        else:
            ctx = GuardedSteps(self)
            losses = self.method.adversarial_step(batch, ctx)
            problem = "non-finite losses" if ctx.skipped else None
            schedulers = self.lr_schedulers()
            with warnings.catch_warnings():
                # An optimiser that sits out (the unified model's discriminator while its
                # terms weigh 0) keeps its schedule in step for a resume that turns it on;
                # PyTorch warns that it has not stepped, which is intended here.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step",
                                        category=UserWarning)
                for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
                    if sched is not None:
                        sched.step()
        if problem is not None:
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= self.nan_patience:
                raise TrainingDiverged(
                    f"training diverged: {self.bad_in_a_row} {problem} in a row at step "
                    f"{self.batches_done}; resume from last.ckpt with a lower learning rate "
                    "(--resume --lr) or gradient clipping (--resume --set grad_clip=1), or start a "
                    "new run if last.ckpt was saved after the losses rose"
                )
            return None
        self.bad_in_a_row = 0
        self.batches_done += 1
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        self.log_dict({f"train_{k}": v for k, v in self.last_losses.items()},
                      on_step=True, on_epoch=False, batch_size=_batch_size(batch))
        return losses["loss"] if self.automatic_optimization else None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update()

    # -- validation ---------------------------------------------------------------
    def inference_copy(self) -> Method:
        """The method with EMA weights when the paper averages them, else itself."""
        if self.ema is None:
            return self.method
        shadow = copy.deepcopy(self.method)
        self.ema.copy_to(shadow)
        return shadow

    def on_validation_epoch_start(self) -> None:
        self._val_method = self.inference_copy()
        self._val_method.eval()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y, mask = batch["source"], batch["target"], batch["mask"]
        code = batch.get("target_code")  # any-to-any models: the direction this subject is scored in
        request = SynthesisRequest(age=_first_age(batch),
                                   target_code=None if code is None else int(torch.as_tensor(code).flatten()[0]))
        with torch.no_grad():
            window = patch_window(self._val_method.config.train)
            if self._val_method.config.train.spatial == "2d":  # slice by slice, as translate does
                pred = synthesize_slices(self._val_method, x, request).mean(0)
            elif window is not None:  # trained on patches: the windows translate runs
                pred = synthesize_windows(self._val_method, x, request, window).mean(0)
            else:
                pred = self._val_method.synthesize(x, request).mean(0)
        p = pred[0, 0].float().cpu().numpy()
        t = y[0, 0].float().cpu().numpy()
        m = mask[0, 0].bool().cpu().numpy()
        scores = {
            "val_mae": metrics.mae(p, t, m),
            "val_psnr": metrics.psnr(p, t, NORMALISED_RANGE, m),
            "val_ssim": metrics.ssim(p, t, NORMALISED_RANGE, m),
        }
        scores = {k: (v if math.isfinite(v) else 100.0) for k, v in scores.items()}
        self.log_dict(scores, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        self._val_method = None  # type: ignore[assignment]
        self.method.train()

    # -- checkpoint state that Lightning does not know about ------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["synth"] = {"batches_done": self.batches_done,
                               # the key predates the methods' own divergence tests
                               "nonfinite_in_a_row": self.bad_in_a_row}
        if self.ema is not None:
            checkpoint["synth"]["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("synth", {})
        self.batches_done = int(state.get("batches_done", 0))
        self.bad_in_a_row = int(state.get("nonfinite_in_a_row", 0))
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


def _batch_size(batch: dict[str, Any]) -> int:
    return int(batch["source"].shape[0])


def _first_age(batch: dict[str, Any]) -> float | None:
    age = batch.get("age")
    if age is None:
        return None
    value = float(torch.as_tensor(age).flatten()[0])
    return None if math.isnan(value) else value
