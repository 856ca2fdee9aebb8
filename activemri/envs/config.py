"""Environment configuration: YAML presets in ``envs/``, overrides, and what they build.

An env preset is a YAML mapping of :class:`EnvConfig` fields (see ``envs/README.md``).
``gymnasium.make(id, **overrides)`` reads the id's preset and applies the keyword overrides:
any :class:`EnvConfig` field, ``data_root`` (alias of ``data``), or a
:class:`~activemri.envs.scenario.Scenario` field (``budget=``, ``initial_lines=``, ...),
which changes just that field of the preset's scenario.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activemri._config import from_mapping
from activemri._io import read_yaml
from activemri.data import SliceDataset, ensure_builtin
from activemri.envs.scenario import Scenario, resolve_scenario
from activemri.geometry import Geometry, geometry_from_spec
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.resolve import describe_reconstructor, resolve

__all__ = [
    "DEFAULT_CANDIDATE_CHUNK",
    "EnvConfig",
    "EnvDataWarning",
    "build_dataset",
    "build_reconstructor_for_env",
    "describe_reconstructor",
    "load_env_config",
    "preset_dir",
    "resolve_device",
]

BUILTIN_PREFIX = "builtin:"
_SCENARIO_FIELDS = {f.name for f in fields(Scenario)}
_ORDERS = ("shuffle", "sequential")
_COILS = ("single", "multi")
DEFAULT_CANDIDATE_CHUNK = {"cpu": 16, "cuda": 256}
"""Images per forward when scoring candidates, by device type (measured: the default U-Net
on a 2-core CPU takes 25 ms per image at 8-16 images and 37 ms at 64)."""


class EnvDataWarning(UserWarning):
    """Slices were left out of an environment's data (shape mismatch)."""


@dataclass(frozen=True)
class EnvConfig:
    """Everything an activemri environment is built from.

    Attributes:
        data: ``"builtin:NAME"`` (a built-in data set, generated and cached on first use)
            or a folder (or file) of fastMRI h5 volumes. ``None`` in presets that need the
            user's data (``data_root=`` in ``gymnasium.make``).
        split: ``"train"``, ``"val"``, ``"test"`` (seeded volume-level split), or ``None`` for
            every volume.
        split_seed: Seed of the split.
        acquisitions: Keep only these ``acquisition`` attributes (e.g. ``["CORPD_FBK"]``).
        kspace_width: Keep only volumes of this k-space width (fastMRI knee: 368 or 372).
        coils: ``"single"`` or ``"multi"``: the kind of k-space the env is for; a file of the
            other kind is an error at construction (naming it) rather than a silent
            change of what the env simulates. ``None`` accepts either.
        max_slices: Keep a seeded random subset of at most this many of the split's slices
            (kept in dataset order), e.g. to evaluate or learn a mask on a sample. Subsets
            of one seed are nested: the first ``n`` of the same permutation.
        subset_seed: Seed of that subset (the same seed and data give the same slices).
        reconstructor: A reconstructor preset (``.yaml``; relative paths are relative to the
            env preset), a checkpoint (``.pt``), a registry name (``zero_filled``, ...), a
            ``module:Class`` path, or a :class:`~activemri.recon_models.Reconstructor`.
        reconstructor_config: Constructor arguments when ``reconstructor`` names a class
            (``recon_size`` is taken from the data).
        trust_class_path: Allow a checkpoint of a non-built-in class (imports its module).
        scenario: Initial mask, budget and reward (a name, mapping or scenario).
        geometry: What one action acquires (:mod:`activemri.geometry`): ``"lines"``
            (phase-encode columns of 2-D slices; ``Discrete(W)``) or ``"points"`` (points of
            the ky-kz planes of 3-D volumes; ``Discrete(H*W)``; the scenario's
            ``initial_lines`` is then the side of the central ky-kz block, its budgets count
            points).
        elliptical_shutter: Points only: measure only the points inside the ellipse
            inscribed in the plane (the corners are never acquired, as on scanners).
        order: ``"shuffle"`` (each pass a new permutation from the env's ``np_random``,
            looping forever) or ``"sequential"`` (dataset order, one pass after another).
            ``None``: shuffle for ``split="train"``, sequential otherwise.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        bf16: Run the reconstructor under bfloat16 autocast where the device runs bf16
            natively: CUDA, and CPUs with AVX512-BF16 or AMX (about 2x faster U-Net
            forwards there, SSIM within 1e-3 of float32; ignored on other CPUs).
        channels_last: Keep the reconstructor's weights channels-last (faster oneDNN
            convolutions on CPU).
        observation: The observation's entries, a subset of
            :data:`~activemri.envs.observation.ENV_KEYS` (``reconstruction``,
            ``uncertainty``, ``mask``, ``kspace``, ``action_mask``, ``budget_used``,
            ``budget_left``);
            ``None``: ``reconstruction``, ``mask`` and, for a reconstructor with an
            uncertainty head, ``uncertainty``.
        observe_kspace: Add ``kspace`` (the observed k-space, real/imag channels) to the
            observation's entries.
        metric_threads: Torch intra-op threads of the metric pass on CPU (``None``: the
            process's setting). 1 by default: the SSIM pass is many short parallel loops,
            and when another process holds a core (the normal state of a training job) each
            one waits for a descheduled thread; at one thread it runs at full speed beside a
            load (``activemri bench --load``). The reconstructor keeps the process's threads.
        candidate_chunk: Most images per forward when scoring candidate lines; ``None``
            picks :data:`DEFAULT_CANDIDATE_CHUNK` for the device (small on CPU, where large
            convolution batches run slower per image; large on CUDA).
        cache_slices: Keep every slice read in host memory, so later episodes on it skip the
            h5 read (for data that fits in RAM, e.g. built-in data).
        builtin_seed: Seed of built-in data.
        domain_check: When a trained reconstructor meets data it was not trained on, compare
            it with zero-filled on a sample of slices first (cached per model and folder),
            warn loudly (:class:`~activemri.recon_models.domain.DomainWarning`) if it does not
            help, and record the check (``sim.domain_check``, ``results.json``).
        cache_dir: Cache root of built-in data (default ``$ACTIVEMRI_CACHE``, else
            ``$XDG_CACHE_HOME/activemri`` or ``~/.cache/activemri``).
        id: The registered id this configuration belongs to, if any.
        description: One line about the preset.
        source: The YAML file read, if any.
    """

    data: str | None = "builtin:default"
    split: str | None = "train"
    split_seed: int = 0
    acquisitions: tuple[str, ...] | None = None
    kspace_width: int | None = None
    coils: str | None = None
    max_slices: int | None = None
    subset_seed: int = 0
    reconstructor: str | Reconstructor = "zero_filled"
    reconstructor_config: Mapping[str, Any] = field(default_factory=dict)
    trust_class_path: bool = False
    scenario: Scenario = field(default_factory=lambda: resolve_scenario("builtin-4x"))
    geometry: str = "lines"
    elliptical_shutter: bool = False
    order: str | None = None
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    observation: tuple[str, ...] | None = None
    observe_kspace: bool = False
    metric_threads: int | None = 1
    candidate_chunk: int | None = None
    cache_slices: bool = False
    builtin_seed: int = 0
    domain_check: bool = True
    cache_dir: str | None = None
    id: str | None = None
    description: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.order is not None and self.order not in _ORDERS:
            raise ValueError(f"order must be one of {_ORDERS} or None, got {self.order!r}")
        geometry_from_spec(self.geometry, ellipse=self.elliptical_shutter)  # raises if invalid
        if self.coils is not None and self.coils not in _COILS:
            raise ValueError(f"coils must be one of {_COILS} or None, got {self.coils!r}")
        if self.metric_threads is not None and self.metric_threads < 1:
            raise ValueError(f"metric_threads must be >= 1 or None, got {self.metric_threads}")
        if self.candidate_chunk is not None and self.candidate_chunk < 1:
            raise ValueError(f"candidate_chunk must be >= 1, got {self.candidate_chunk}")
        if self.max_slices is not None and self.max_slices < 1:
            raise ValueError(f"max_slices must be >= 1 or None, got {self.max_slices}")
        if self.observation is not None:
            from activemri.envs.observation import resolve_keys

            # every check but the uncertainty head's, which needs the model
            resolve_keys(self.observation, has_uncertainty=True)

    @property
    def acquisition_geometry(self) -> Geometry:
        """The :class:`~activemri.geometry.Geometry` of ``geometry`` and ``elliptical_shutter``."""
        return geometry_from_spec(self.geometry, ellipse=self.elliptical_shutter)

    @property
    def resolved_order(self) -> str:
        """The slice order actually used."""
        if self.order is not None:
            return self.order
        return "shuffle" if self.split == "train" else "sequential"


def preset_dir() -> Path:
    """The folder of env presets.

    ``$ACTIVEMRI_ENV_PRESETS`` if set; else ``envs/`` of the source checkout (editable
    installs); else the copy installed inside the package (``activemri/presets/envs``, where
    a wheel puts the top-level ``envs/`` folder).
    """
    env = os.environ.get("ACTIVEMRI_ENV_PRESETS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "envs").is_dir():
        return checkout / "envs"
    return package / "presets" / "envs"


def _read_preset(preset: str | Path) -> tuple[dict[str, Any], Path]:
    path = Path(preset)
    if path.suffix not in (".yaml", ".yml"):
        path = preset_dir() / f"{preset}.yaml"
    if not path.is_file():
        from activemri.envs.registration import ENV_IDS

        if str(preset) in ENV_IDS:  # a registered id names its preset
            return _read_preset(ENV_IDS[str(preset)])
        names = sorted(p.stem for p in preset_dir().glob("*.yaml"))
        raise FileNotFoundError(
            f"env preset {path} does not exist: use a YAML path, a preset name "
            f"({', '.join(names)}) or a registered id ({', '.join(sorted(ENV_IDS))}); "
            f"presets live in {preset_dir()} "
            "(ACTIVEMRI_ENV_PRESETS selects another folder)"
        )
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an env preset is a mapping of EnvConfig fields")
    return data, path


def load_env_config(
    preset: str | Path | Mapping[str, Any] | EnvConfig | None = None, **overrides: Any
) -> EnvConfig:
    """Read an env preset and apply overrides.

    Args:
        preset: A preset name (``builtin-v0`` for ``envs/builtin-v0.yaml``), a YAML path, a
            mapping of fields, an :class:`EnvConfig` (then ``overrides`` must be its fields),
            or ``None`` for the defaults.
        **overrides: :class:`EnvConfig` fields, ``data_root``, or scenario fields.

    Returns:
        The configuration.

    Raises:
        FileNotFoundError: If the preset file does not exist.
        ValueError: For unknown keys or invalid values.
    """
    if isinstance(preset, EnvConfig):
        unknown = sorted(set(overrides) - {f.name for f in fields(EnvConfig)})
        if unknown:
            raise ValueError(f"overrides {unknown} are not EnvConfig fields; edit the config")
        return replace(preset, **overrides)
    values: dict[str, Any] = {}
    source: Path | None = None
    if isinstance(preset, Mapping):
        values = dict(preset)
    elif preset is not None:
        values, source = _read_preset(preset)
    values.update(overrides)
    if "data_root" in values:
        values["data"] = values.pop("data_root")
    scenario_changes = {k: values.pop(k) for k in list(values) if k in _SCENARIO_FIELDS}

    allowed = {f.name for f in fields(EnvConfig)} - {"source"}
    if set(values) - allowed:  # raises, naming the typo before the scenario is resolved
        from_mapping(EnvConfig, values, source=source, exclude=("source",))
    scenario = values.pop("scenario", None)
    if source is not None and isinstance(scenario, str) and scenario.endswith((".yaml", ".yml")):
        relative = source.parent / scenario  # a scenario file, relative to the env preset
        if not Path(scenario).is_absolute() and relative.is_file():
            scenario = str(relative)
    try:
        values["scenario"] = resolve_scenario(
            scenario if scenario is not None else "builtin-4x", **scenario_changes
        )
    except ValueError as exc:
        if source is None:
            raise
        raise ValueError(f"{source}: {exc}") from exc
    recon = values.get("reconstructor")
    if isinstance(recon, os.PathLike):
        recon = values["reconstructor"] = os.fspath(recon)
    if source is not None and isinstance(recon, str) and recon.endswith((".yaml", ".yml", ".pt")):
        relative = source.parent / recon
        if not Path(recon).is_absolute() and relative.exists():
            values["reconstructor"] = str(relative.resolve())
    if isinstance(values.get("data"), os.PathLike):  # paths are kept as strings
        values["data"] = os.fspath(values["data"])
    config = from_mapping(EnvConfig, values, source=source, exclude=("source",))
    return replace(config, source=source) if source is not None else config


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; other strings are checked.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ...

    Raises:
        ValueError: If CUDA is requested but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def build_dataset(config: EnvConfig) -> tuple[SliceDataset, list[int]]:
    """Open the configured slices and keep those of one shape.

    Args:
        config: The environment configuration (``data``, ``split``, filters).

    Returns:
        The dataset and the indices of the slices episodes draw from (all of one k-space
        shape and target size; if several shapes exist, the most common one is kept and an
        :class:`EnvDataWarning` says how many slices were left out).

    Raises:
        ValueError: If no data is configured, volumes have no targets (unless the reward is
            self-supervised), or a volume's coil
            count contradicts ``config.coils``.
    """
    if config.data is None:
        raise ValueError(
            f"{config.id or 'this environment'} needs fastMRI data: pass data_root='/path/to/"
            "h5/folder' (e.g. gymnasium.make(id, data_root=...))"
        )
    if config.data.startswith(BUILTIN_PREFIX):
        root = ensure_builtin(
            config.data[len(BUILTIN_PREFIX) :], seed=config.builtin_seed, cache_dir=config.cache_dir
        )
    else:
        root = Path(config.data).expanduser()
    dataset = SliceDataset(
        root,
        split=config.split,
        split_seed=config.split_seed,
        acquisitions=config.acquisitions,
        kspace_widths=None if config.kspace_width is None else [config.kspace_width],
    )
    missing = [v.path.name for v in dataset.volumes if v.target_key is None]
    if missing and config.scenario.reward != "self_supervised":
        raise ValueError(
            f"the environment needs fully sampled targets for a {config.scenario.reward} "
            f"reward; {len(missing)} volume(s) have none (e.g. {missing[0]}): use "
            "reward='self_supervised', which never reads the target, on test-set files"
        )
    if config.coils is not None:
        wrong = [v for v in dataset.volumes if (v.num_coils > 1) != (config.coils == "multi")]
        if wrong:
            names = ", ".join(f"{v.path.name} ({v.num_coils} coils)" for v in wrong[:3])
            more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
            raise ValueError(
                f"{config.id or 'this environment'} is a {config.coils}-coil environment but "
                f"{len(wrong)} volume(s) in {root} are not: {names}{more} (use the "
                f"{'single' if config.coils == 'multi' else 'multi'}-coil env, or coils=None "
                "to accept either)"
            )
    shapes = [
        (dataset.slice_shape(i), dataset.slice_meta(i).recon_size) for i in range(len(dataset))
    ]
    counts = Counter(shapes)
    keep, _ = counts.most_common(1)[0]
    indices = [i for i, s in enumerate(shapes) if s == keep]
    if len(counts) > 1:
        warnings.warn(
            f"{root}: slices have {len(counts)} different shapes; keeping the "
            f"{len(indices)} slices of k-space {keep[0]} / target {keep[1]} and leaving out "
            f"{len(shapes) - len(indices)} (set kspace_width= to choose)",
            EnvDataWarning,
            stacklevel=2,
        )
    if config.max_slices is not None and config.max_slices < len(indices):
        # A prefix of one seeded permutation: smaller subsets nest in larger ones.
        chosen = np.random.default_rng(config.subset_seed).permutation(len(indices))
        indices = [indices[i] for i in sorted(chosen[: config.max_slices].tolist())]
    return dataset, indices


def build_reconstructor_for_env(
    config: EnvConfig,
    recon_size: tuple[int, int],
    device: torch.device,
    kspace_shape: tuple[int, int, int] | None = None,
) -> Reconstructor:
    """The configured reconstructor, checked against the data's geometry.

    The spec is turned into a model by :func:`activemri.recon_models.resolve` (one place for
    the trust rule and the refusal of untrained ``needs_weights`` models).

    Args:
        config: The environment configuration (``reconstructor`` and its options).
        recon_size: ``(h, w)`` of the data's targets.
        device: Where checkpoints are loaded.
        kspace_shape: ``(C, H, W)`` of the data's k-space, if known: then a single-coil
            model on multi-coil data, or k-space smaller than the targets, is refused here
            rather than at the first forward.

    Raises:
        ValueError: For a trained model without a checkpoint, or a size or coil mismatch.
    """
    model = resolve(
        config.reconstructor,
        recon_size=recon_size,
        config=config.reconstructor_config,
        map_location=device,
        trust_class_path=config.trust_class_path,
    )
    if tuple(model.recon_size) != tuple(recon_size):
        raise ValueError(
            f"the reconstructor outputs {tuple(model.recon_size)} images but the data's targets "
            f"are {tuple(recon_size)}"
        )
    if kspace_shape is not None:
        coils, height, width = kspace_shape
        if coils > 1 and not model.supports_multicoil:
            raise ValueError(
                f"{type(model).__name__} handles single-coil data only, but the data have "
                f"{coils} coils"
            )
        if height < recon_size[0] or width < recon_size[1]:
            raise ValueError(
                f"the data's {height}x{width} k-space is smaller than their "
                f"{recon_size[0]}x{recon_size[1]} targets: images cannot be cropped to them"
            )
    return model
