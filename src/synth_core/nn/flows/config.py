"""DUAL-GLOW hyper-parameters: the settings shared with the method, the network's config,
and two presets (``cpu``, ``paper``).

Defaults are the paper's (Sun et al. ICCV 2019, sec. 4.1 and appendix 6.2) except where
a comment says otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from synth_core.errors import UserError

AGE_EFFECTS = ("uniform", "regional")


@dataclass
class DualGlowNetworkSettings:
    """The settings of DUAL-GLOW's networks and loss, defined once.

    Both :class:`DualGlowConfig` (what the network reads) and the registered method's
    settings (``synth_core.methods.dual_glow.DualGlowSettings``, what a user sets with
    ``--set`` and a card stores) inherit these fields, so a setting cannot exist in one and
    not the other, or differ in type or default. Defaults are the paper's.

    Attributes:
        levels: squeeze levels L of each Glow (paper: 4).
        steps_per_level: flow steps per level K (paper: 16).
        hidden_channels: width of each coupling network (paper: 512).
        relation_hidden: hidden channels of each relation network; 0 means a single
            3x3x3 convolution, the paper's ADNI setting (appendix 6.2).
        learned_scale: True learns sigma_theta(z_m) of eq. 6; False fixes it at 1,
            as the authors' released code does.
        age_conditioning: condition the top PET prior on age (eq. 16-17) and add the
            age regression heads; needs levels >= 2.
        age_range: (min, max) age in years that maps to [-1, 1]; ages outside it are
            refused at sampling time.
        age_head_hidden: channels of the age regression heads (not given in the paper).
        age_effect: how the age enters the top PET prior (the paper does not say).
            ``"uniform"``: one broadcast age channel next to the MRI latent; a
            convolution sees the same value everywhere, so age can only shift each
            latent channel by the same amount at every position (measured: the whole
            brain brightens with age). ``"regional"``: the relation network also reads
            normalised voxel coordinates, and a second zero-initialised network gives
            a per-position slope that multiplies the age, so age can move one region's
            latent and not another's. Checkpoints written before this field existed are
            ``"uniform"`` (the default here); both presets use ``"regional"``.
        age_head_coordinates: the age heads also read voxel positions (see
            :class:`~synth_core.nn.flows.priors.AgeRegressor`); off in checkpoints from
            before the field existed.
        age_head_grid: 0 for the convolutional age heads; N > 0 for heads linear in the
            latent averaged over N**3 cells (same class).
        gradient_reversal_scale: factor of the reversed gradient (1 in the GRL paper).
        lambda_mri: weight lambda of the MRI likelihood term, eq. 12 (paper: 0.001).
        age_loss_weight: weight of every age regression loss (paper: 0.01).
        age_keep_weight: weight of the heads that keep age in the top latents alone, if
            not None (not in the paper: an option to make the top latents carry more age
            without strengthening the adversaries, whose reversed gradient can diverge).
        n_bins: number of intensity bins assumed by dequantisation (Glow: 256 = 8 bit).
        checkpointing: gradient checkpointing per flow step (see ``glow.py``).
    """

    levels: int = 4
    steps_per_level: int = 16
    hidden_channels: int = 512
    relation_hidden: int = 0
    learned_scale: bool = True
    age_conditioning: bool = True
    age_range: tuple[float, float] = (50.0, 100.0)
    age_head_hidden: int = 32
    age_effect: str = "uniform"
    age_head_coordinates: bool = False
    age_head_grid: int = 0
    gradient_reversal_scale: float = 1.0
    lambda_mri: float = 0.001
    age_loss_weight: float = 0.01
    age_keep_weight: float | None = None
    n_bins: int = 256
    checkpointing: bool = False

    def network_settings(self) -> dict[str, Any]:
        """These fields' values (of this or any subclass), by name."""
        return {f.name: getattr(self, f.name) for f in fields(DualGlowNetworkSettings)}


@dataclass
class DualGlowConfig(DualGlowNetworkSettings):
    """Configuration of :class:`~synth_core.nn.flows.dual_glow.DualGlow`: the shared
    :class:`DualGlowNetworkSettings` plus what the network alone needs to know.

    The training fields (optimizer, lr, betas, warmup_steps, epochs) and the data grid
    (volume_shape, voxel_size_mm) are not used by the network itself; the presets below
    state the paper's values there so that one object describes a preset.

    Attributes:
        mri_channels, pet_channels: channels of the input and target volumes.
        optimizer, lr, betas: Adamax, 1e-3, decay 0.9 for the first moment (sec. 4.1);
            beta2 = 0.999 is Adamax's usual value, the paper does not give it.
        warmup_steps: linear learning-rate warm-up; not in the paper (Glow's code warms
            up over its first epochs), so a guess.
        epochs: training epochs (paper: 90).
        volume_shape, voxel_size_mm: the grid the model works on (paper: 64x96x64 at
            1.5 mm).
    """

    mri_channels: int = 1
    pet_channels: int = 1
    optimizer: str = "adamax"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 1000
    epochs: int = 90
    volume_shape: tuple[int, int, int] = (64, 96, 64)
    voxel_size_mm: float = 1.5

    def __post_init__(self) -> None:
        problems = []
        if self.levels < 1 or self.steps_per_level < 1 or self.hidden_channels < 1:
            problems.append("levels, steps_per_level and hidden_channels must be >= 1")
        if self.age_conditioning and self.levels < 2:
            problems.append("age_conditioning needs levels >= 2 (lower latents carry no age)")
        lo, hi = self.age_range
        if not lo < hi:
            problems.append(f"age_range must be (min, max) with min < max, got {self.age_range}")
        if self.age_effect not in AGE_EFFECTS:
            problems.append(f"age_effect must be one of {AGE_EFFECTS}, got {self.age_effect!r}")
        if self.age_head_grid < 0:
            problems.append(f"age_head_grid must be >= 0, got {self.age_head_grid}")
        if self.n_bins < 2:
            problems.append(f"n_bins must be >= 2, got {self.n_bins}")
        if any(s % 2**self.levels for s in self.volume_shape):
            problems.append(
                f"volume_shape {self.volume_shape} must be a multiple of 2**levels = {2**self.levels}"
            )
        if problems:
            raise UserError("invalid DUAL-GLOW config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DualGlowConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"DUAL-GLOW config has unknown keys {unknown}; the checkpoint was written by "
                "another version, use a matching checkpoint or remove those keys"
            )
        tuples = {"age_range", "betas", "volume_shape"}
        kwargs: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in values.items()}
        return cls(**kwargs)


def cpu_preset() -> DualGlowConfig:
    """Small model for the 48x64x48 phantom at 4 mm; trains on a laptop CPU.

    3 levels (top latent 6x8x6), 8 steps per level, 64 hidden channels, relation
    networks with 32 hidden channels. The phantom's ages (55-95 years) lie in age_range.
    The prior scale is fixed at one (the authors' code): on the phantom it learned the age
    effect and translated better than the learned scale at equal steps (measured in
    docs/methods/dual-glow.md); the paper preset keeps the paper's learned scale.
    """
    return DualGlowConfig(
        levels=3,
        steps_per_level=8,
        hidden_channels=64,
        relation_hidden=32,
        learned_scale=False,
        age_effect="regional",
        warmup_steps=200,
        volume_shape=(48, 64, 48),
        voxel_size_mm=4.0,
    )


def paper_preset() -> DualGlowConfig:
    """The paper's ADNI model: 4 levels of 16 steps, 512 hidden channels, 64x96x64 at 1.5 mm.

    Checkpointing is on so that both flows fit on one GPU at the cost of ~30% more time.
    """
    return DualGlowConfig(checkpointing=True, age_effect="regional")


PRESETS = {"cpu": cpu_preset, "paper": paper_preset}


def preset(name: str) -> DualGlowConfig:
    """The config of a named preset (``cpu`` or ``paper``)."""
    if name not in PRESETS:
        raise UserError(f"unknown DUAL-GLOW preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
