"""DUIIT: cross-modal augmentation by a translator trained jointly with the downstream predictor.

The paper's model (eq. 1-3): a CycleGAN translator, generators G (source -> target) and
F (target -> source), PatchGAN discriminators D_t and D_s, least-squares GAN loss, image
pools, cycle weight 10 (eq. 1); a predictor P on the target modality that learns from the
real target images with their labels and from G(source) with the source subjects' labels
(eq. 2); the translator minimises ``L_trans + lambda * L_pred`` with lambda = 1e-3 (eq. 3),
so translations are pushed to keep what predicts the label. Adam, 2e-4 for the translator
and 1e-3 for the predictor, both constant then linearly decaying.

Several source modalities at once (the paper's MIX-CT-MRI-PET): one G, F and D_s per
source, one D_t and one P shared. Three optimisers in turn each batch: generators,
discriminators, predictor. The predictor (MONAI's ResNet, ``synth_core.nn.predictor``)
regresses the standardised age (MSE, the paper's task) or classifies the diagnosis
(cross-entropy); the age scaling and the class vocabulary come from the training data
and are kept in the config, so the card records them.

Inference: ``synthesize`` runs G of the requested source (``request.source``; the first
by default), or F with ``--reverse``; ``predict_volume`` gives P's estimate for a volume in the
target modality.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from synth_core.errors import UserError
from synth_core.methods._adversarial import (
    AdversarialMethod,
    AdversarialSettings,
    cycle_discriminator_loss,
    cycle_generator_loss,
)
from synth_core.methods.base import (
    Capabilities,
    StepContext,
    SynthesisRequest,
    TrainSettings,
    register,
)
from synth_core.nn import GANLoss, ImagePool, PatchDiscriminator, ResnetGenerator, init_weights
from synth_core.nn.predictor import Predictor, PredictorSettings


@dataclass
class DUIITConfig(AdversarialSettings):
    """DUIIT settings; defaults are the paper's (``paper`` preset).

    Attributes:
        features, n_blocks, n_downsampling, outer_kernel, upsample: the CycleGAN generators.
        lambda_cycle: cycle weight (paper: 10); lambda_identity: identity weight as a
            fraction of lambda_cycle (the paper names none: 0).
        pool_size: history of generated images shown to the discriminators (50).
        lambda_pred: weight of the predictor's loss in the translator's objective (eq. 3,
            paper 1e-3), on the paper's scale: for age, the MSE in years squared.
        predictor_lr: the predictor's learning rate (paper 1e-3); predictor_weight_decay:
            its Adam weight decay (L2; a few labelled subjects overfit without it).
        predictor: the predictor network (paper: ResNet-50).
        task: "age" (regression, the paper's) or "diagnosis" (classification).
        age_mean, age_std: the age scaling (years) of the training labels; the predictor
            regresses ``(age - age_mean) / age_std``. Set from the data at training.
        classes: the diagnosis vocabulary (class index -> name), set from the data.
        sources: the source modalities, in the order of the networks; set from the run.
        final_activation: the generators' last activation: "tanh" (CycleGAN's) bounds the
            output to the model range [-1, 1] (for CT the card's window: -1200..3200 HU, or
            -1000..1000 HU for models made before it widened, below the skull's bone at
            about 1500 HU); "none" leaves it unbounded.
    """

    features: int = 64
    n_blocks: int = 9
    n_downsampling: int = 2
    outer_kernel: int = 7
    upsample: str = "transpose"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.0
    pool_size: int = 50
    lambda_pred: float = 1e-3
    predictor_lr: float = 1e-3
    predictor_weight_decay: float = 0.0
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    task: str = "age"
    age_mean: float = 0.0
    age_std: float = 1.0
    classes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    final_activation: str = "tanh"
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        max_steps=200_000, lr=2e-4, batch_size=1, spatial="2d", multiple=4))


def _cpu() -> DUIITConfig:
    # 2D slices of the `small` phantom (48 x 64 at 4 mm); small generators as CycleGAN's cpu
    # preset; a four-stage basic-block ResNet of 8-64 channels (78 k parameters) as predictor:
    # a ResNet-50 (23 M) on a few labelled subjects only memorises them.
    return DUIITConfig(
        features=16, n_blocks=3, outer_kernel=3, disc_features=16, pool_size=50,
        predictor=PredictorSettings(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                                    dropout=0.2),
        predictor_weight_decay=1e-4,
        train=TrainSettings(max_steps=1200, lr=2e-4, batch_size=4, spatial="2d", val_every=200,
                            checkpoint_every=50, multiple=4),
    )


def _paper() -> DUIITConfig:
    return DUIITConfig()


def _tiny() -> DUIITConfig:
    return DUIITConfig(
        features=4, n_blocks=1, disc_features=4, disc_layers=1, pool_size=2,
        predictor=PredictorSettings(block="basic", layers=(1, 1, 1, 1), widths=(2, 4, 4, 4)),
        train=TrainSettings(max_steps=4, batch_size=2, spatial="2d", val_every=2,
                            checkpoint_every=2, multiple=4),
    )


@register
class DUIIT(AdversarialMethod):
    key = "duiit"
    title = "DUIIT (CycleGAN translator trained jointly with a predictor on the target modality)"
    paper = ("Discriminative cross-modal data augmentation for medical imaging applications "
             "(anonymous, under double-blind review)")
    capabilities = Capabilities(spatial=("2d", "3d"), data=("labelled", "unpaired"),
                                bidirectional=True, adversarial=True)
    config_class = DUIITConfig
    presets = {"cpu": _cpu, "paper": _paper, "tiny": _tiny}
    resumable = ("lambda_pred", "lambda_cycle", "lambda_identity", "predictor_lr")

    def __init__(self, config: DUIITConfig, source: str, target: str) -> None:
        super().__init__(config, source, target)
        sources = tuple(config.sources) or tuple(s for s in source.split(",") if s)
        config.sources = sources
        dims = 3 if config.train.spatial == "3d" else 2
        if config.task not in ("age", "diagnosis"):
            raise UserError(f"duiit task {config.task!r} is not 'age' or 'diagnosis'")

        def generator() -> ResnetGenerator:
            return ResnetGenerator(dims, 1, 1, features=config.features,
                                   n_downsampling=config.n_downsampling, n_blocks=config.n_blocks,
                                   norm=config.norm, outer_kernel=config.outer_kernel,
                                   upsample=config.upsample,
                                   final_activation=config.final_activation)

        def discriminator() -> PatchDiscriminator:
            return PatchDiscriminator(dims, 1, features=config.disc_features,
                                      n_layers=config.disc_layers, norm=config.norm)

        # Keys are modality names: G of t1 is "to_target.t1", its F "to_source.t1".
        self.to_target = nn.ModuleDict({s: generator() for s in sources})
        self.to_source = nn.ModuleDict({s: generator() for s in sources})
        self.discriminator_source = nn.ModuleDict({s: discriminator() for s in sources})
        self.discriminator_target = discriminator()
        for net in itertools.chain(self.to_target.values(), self.to_source.values(),
                                   self.discriminator_source.values(), [self.discriminator_target]):
            init_weights(net)
        outputs = 1 if config.task == "age" else max(2, len(config.classes))
        self.predictor = Predictor(dims, outputs, config.predictor)
        self.gan_loss = GANLoss(config.gan_mode)
        self.pools = {s: (ImagePool(config.pool_size), ImagePool(config.pool_size)) for s in sources}

    # -- the engine's hooks ------------------------------------------------------
    @classmethod
    def optimizer_steps_per_batch(cls, config: Any) -> int:
        return 3  # generators, discriminators, predictor

    @classmethod
    def fit_labels(cls, config: DUIITConfig, summary: dict[str, Any], sources: list[str]) -> None:
        """Take the label scaling and vocabulary of the training data into the config."""
        config.sources = tuple(sources)
        if summary.get("task") != config.task:
            raise UserError(f"the data's labels are for {summary.get('task')!r}, the config's task "
                            f"is {config.task!r}")
        if config.task == "age":
            config.age_mean, config.age_std = summary["age_mean"], summary["age_std"]
        else:
            config.classes = tuple(summary["classes"])

    def card_capabilities(self) -> dict[str, Any]:
        c = self.config
        pred: dict[str, Any] = {"task": c.task}
        if c.task == "age":
            pred |= {"units": "years", "age_mean": c.age_mean, "age_std": c.age_std,
                     "scaling": "the predictor regresses (age - age_mean) / age_std"}
        else:
            pred |= {"classes": list(c.classes)}
        return {"sources": list(c.sources), "predictor": pred}

    def inference_modules(self) -> list[str]:
        return ["to_target", "to_source", "predictor"]

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.to_target.parameters(), self.to_source.parameters())

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.discriminator_source.parameters(),
                               self.discriminator_target.parameters())

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return [*super().configure_optimizers(),
                torch.optim.Adam(self.predictor.parameters(), lr=c.predictor_lr, betas=betas,
                                 weight_decay=c.predictor_weight_decay)]

    # -- the predictor's loss (eq. 2) --------------------------------------------------
    def paper_loss_scale(self) -> float:
        """What turns the predictor's loss into the paper's units for eq. 3: P regresses the
        standardised age, so its MSE times ``age_std**2`` is the MSE in years squared the
        paper's lambda (1e-3) weighs; 1 for a classification (cross-entropy either way)."""
        return self.config.age_std ** 2 if self.config.task == "age" else 1.0

    def prediction_loss(self, images: torch.Tensor, ages: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
        """Mean loss of P on ``images`` (B, 1, *S) against their labels; subjects without
        the label are left out (a zero loss when none has it)."""
        out = self.predictor(images)
        if self.config.task == "age":
            known = torch.isfinite(ages)
            if not known.any():
                return out.sum() * 0.0
            scaled = (ages[known] - self.config.age_mean) / self.config.age_std
            return F.mse_loss(out[known, 0], scaled)
        known = labels >= 0
        if not known.any():
            return out.sum() * 0.0
        return F.cross_entropy(out[known], labels[known])

    def _pred_terms(self, fakes: list[torch.Tensor], real_t: torch.Tensor,
                    batch: dict[str, Any]) -> torch.Tensor:
        """Eq. 2 over one batch: P on every G(source) with the source labels, and on the
        real target images with theirs, each image weighing alike."""
        images = torch.cat([real_t, *fakes])
        n = len(fakes)
        ages = torch.cat([batch["target_age"], *(batch["source_age"][:, i] for i in range(n))])
        labels = torch.cat([batch["target_label"], *(batch["source_label"][:, i] for i in range(n))])
        return self.prediction_loss(images, ages, labels)

    def adversarial_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        c = self.config
        real_t = batch["target"]
        sources = batch["sources"]  # (B, n_sources, 1, *S)
        discs = [*self.discriminator_source.values(), self.discriminator_target]
        for net in (*discs, self.predictor):
            net.requires_grad_(False)
        # 1. generators: eq. 3 = eq. 1 for each source + lambda * eq. 2 (P frozen).
        loss_trans = torch.zeros((), device=real_t.device)
        fakes_t: list[torch.Tensor] = []
        fakes_s: list[torch.Tensor] = []
        logged: list[torch.Tensor] = []
        for i, s in enumerate(c.sources):
            loss, parts, fake_s, fake_t = cycle_generator_loss(
                self.to_target[s], self.to_source[s], self.discriminator_source[s],
                self.discriminator_target, sources[:, i], real_t, self.gan_loss,
                c.lambda_cycle, c.lambda_identity)
            loss_trans = loss_trans + loss
            fakes_t.append(fake_t)
            fakes_s.append(fake_s)
            logged.append(parts["cycle"])
        loss_pred_g = self._pred_terms(fakes_t, real_t, batch) * self.paper_loss_scale()
        loss_g = loss_trans + c.lambda_pred * loss_pred_g
        ctx.optimize(0, loss_g)
        for net in discs:
            net.requires_grad_(True)
        # 2. discriminators: real against pooled fakes, for each source's pair.
        loss_d = torch.zeros((), device=real_t.device)
        for i, s in enumerate(c.sources):
            pool_s, pool_t = self.pools[s]
            loss_d = loss_d + cycle_discriminator_loss(
                self.discriminator_source[s], self.discriminator_target, sources[:, i], real_t,
                fakes_s[i], fakes_t[i], pool_s, pool_t, self.gan_loss)
        loss_d = loss_d / len(c.sources)
        ctx.optimize(1, loss_d)
        # 3. predictor: eq. 2 on the real targets and the (now fixed) translations.
        self.predictor.requires_grad_(True)
        loss_p = self._pred_terms([f.detach() for f in fakes_t], real_t, batch)
        ctx.optimize(2, loss_p)
        return {"loss": loss_g.detach(), "trans": loss_trans.detach(),
                "cycle": torch.stack(logged).mean(), "d": loss_d.detach(), "pred": loss_p.detach()}

    # -- inference -------------------------------------------------------------------
    def _source(self, request: SynthesisRequest) -> str:
        source = getattr(request, "source", None) or self.config.sources[0]
        if source not in self.to_target:
            raise UserError(f"this duiit model translates from {', '.join(self.config.sources)}, "
                            f"not {source!r}; pass --from with one of them")
        return source

    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, request: SynthesisRequest) -> torch.Tensor:
        source = self._source(request)
        net = self.to_source[source] if request.reverse else self.to_target[source]
        return net(x).unsqueeze(0)

    @torch.no_grad()
    def predict_volume(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                min_slice_fraction: float = 0.05) -> dict[str, Any]:
        """P's estimate for a normalised target-modality volume ``x`` (1, 1, X, Y, Z): in 2D
        the mean over its axial slices whose ``mask`` area is at least ``min_slice_fraction``
        of the largest (the slices it trained on), in 3D the whole volume.

        Returns {"age": years} or {"diagnosis": class, "probabilities": {class: p}}.
        """
        self.predictor.eval()
        if self.config.train.spatial == "2d":
            area = (mask if mask is not None else torch.ones_like(x, dtype=torch.bool))[0, 0]
            area = area.float().sum(dim=(0, 1))
            keep = torch.nonzero(area >= max(1.0, min_slice_fraction * float(area.max()))).flatten()
            images = x[0, :, :, :, keep].permute(3, 0, 1, 2)
            out = torch.cat([self.predictor(images[i:i + 32]) for i in range(0, len(images), 32)])
        else:
            out = self.predictor(x)
        if self.config.task == "age":
            scaled = float(out[:, 0].mean())
            return {"age": scaled * self.config.age_std + self.config.age_mean}
        probs = torch.softmax(out, dim=1).mean(0)
        classes = list(self.config.classes) or [str(i) for i in range(len(probs))]
        return {"diagnosis": classes[int(probs.argmax())],
                "probabilities": {k: float(p) for k, p in zip(classes, probs, strict=False)}}
