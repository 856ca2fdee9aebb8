"""``recon_models.resolve``: every kind of spec, the trust rule and the capability attributes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from recon_helpers import TINY_UNET

from activemri.envs.core import AcquisitionCore
from activemri.recon_models import (
    CheckpointError,
    Reconstructor,
    TVReconstructor,
    UnetReconstructor,
    VarNetReconstructor,
    ZeroFilled,
    describe_reconstructor,
    load_preset,
    resolve,
)

SIZE = (20, 18)

USER_MODULE = '''
import torch

from activemri.kspace import rss, zero_filled
from activemri.recon_models.base import ReconOutput, Reconstructor


class Learned(Reconstructor):
    """A user model that is meaningless untrained."""

    needs_weights = True

    def __init__(self, recon_size, scale=1.0):
        super().__init__(recon_size, {"scale": scale})
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, kspace, mask, **aux):
        self.check_inputs(kspace, mask)
        return ReconOutput(self.scale * zero_filled(kspace, mask, self.recon_size))


class ScaledZeroFilled(Reconstructor):
    """A user model linear in the acquired columns (not a ZeroFilled subclass)."""

    linear_in_columns = True

    def __init__(self, recon_size, gain=2.0):
        super().__init__(recon_size, {"gain": gain})
        self.gain = float(gain)

    def forward(self, kspace, mask, **aux):
        self.check_inputs(kspace, mask)
        return ReconOutput((self.gain * zero_filled(kspace, mask, self.recon_size)).float())

    def from_coil_images(self, coil_images):
        return (self.gain * rss(coil_images, dim=1)).float()


class SlowScaledZeroFilled(ScaledZeroFilled):
    """The same maths on the core's generic (forward every step) path."""

    linear_in_columns = False
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user module on ``sys.path``; its name, freshly importable."""
    name = "resolve_user_recons"
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_capabilities_are_class_attributes():
    assert UnetReconstructor.needs_weights and VarNetReconstructor.needs_weights
    assert not ZeroFilled.needs_weights and not TVReconstructor.needs_weights
    assert ZeroFilled.linear_in_columns
    assert not any(c.linear_in_columns for c in (TVReconstructor, UnetReconstructor))
    assert VarNetReconstructor.predicts_kspace and not UnetReconstructor.predicts_kspace
    assert ZeroFilled.supports_multicoil
    assert not Reconstructor.needs_weights and not Reconstructor.linear_in_columns
    coil = torch.randn(2, 3, *SIZE, dtype=torch.complex64)
    with pytest.raises(NotImplementedError, match="not linear"):
        TVReconstructor(SIZE).from_coil_images(coil)


def test_zero_filled_output_is_its_coil_images_rss():
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 24, 22, dtype=torch.complex64, generator=gen)
    mask = torch.rand(2, 22, generator=gen) < 0.4
    model = ZeroFilled(SIZE)
    from activemri.kspace import apply_mask, center_crop, ifft2c

    coil = center_crop(ifft2c(apply_mask(k, mask)), SIZE)
    torch.testing.assert_close(model.from_coil_images(coil), model(k, mask).image)


def test_instance_and_registry_names():
    model = ZeroFilled(SIZE)
    assert resolve(model) is model
    built = resolve("zero_filled", recon_size=SIZE)
    assert type(built) is ZeroFilled and built.recon_size == SIZE
    tv = resolve("tv", recon_size=SIZE, config={"lam": 0.02, "iterations": 3})
    assert type(tv) is TVReconstructor and tv.config["iterations"] == 3
    # recon_size overrides the config's
    assert resolve("zero_filled", recon_size=SIZE, config={"recon_size": [4, 4]}).recon_size == SIZE
    with pytest.raises(ValueError, match="does not fit"):
        resolve("tv", recon_size=SIZE, config={"nope": 1})


def test_trained_builtins_are_refused_untrained():
    for name in ("unet", "varnet"):
        with pytest.raises(ValueError, match="untrained"):
            resolve(name, recon_size=SIZE)
    model = resolve("unet", recon_size=SIZE, config=TINY_UNET, allow_untrained=True)
    assert type(model) is UnetReconstructor


def test_user_class_path_with_needs_weights_is_refused_untrained(user_module):
    spec = f"{user_module}:Learned"
    with pytest.raises(ValueError, match=r"untrained \(Learned needs trained weights\)"):
        resolve(spec, recon_size=SIZE)
    model = resolve(spec, recon_size=SIZE, config={"scale": 3.0}, allow_untrained=True)
    assert type(model).__name__ == "Learned" and model.scale.item() == 3.0
    assert describe_reconstructor(spec) == spec


def test_user_class_path_without_capability_builds(user_module):
    model = resolve(f"{user_module}:ScaledZeroFilled", recon_size=SIZE)
    assert model.linear_in_columns and model.recon_size == SIZE


def test_presets_paths_names_mappings(tmp_path):
    (tmp_path / "zf.yaml").write_text("model: zero_filled\nconfig: {recon_size: [20, 18]}\n")
    assert type(resolve(tmp_path / "zf.yaml")) is ZeroFilled
    assert type(resolve("zf.yaml", base_dir=tmp_path)) is ZeroFilled
    assert type(resolve(str(tmp_path / "zf.yaml"))) is ZeroFilled
    mapping = {"model": "tv", "config": {"recon_size": [20, 18], "iterations": 2}}
    assert type(resolve(mapping)) is TVReconstructor
    assert type(resolve(load_preset(mapping))) is TVReconstructor
    named = resolve("tv_large")  # a preset name, looked up in recon_models/
    assert type(named) is TVReconstructor and named.recon_size == (320, 320)
    assert describe_reconstructor(tmp_path / "zf.yaml") == "zf.yaml"
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "missing.yaml")


def test_preset_of_a_trained_model_needs_its_checkpoint(tmp_path, user_module):
    for model in ("unet", f"{user_module}:Learned"):
        preset = tmp_path / "p.yaml"
        preset.write_text(f"model: {model}\nconfig: {{recon_size: [20, 18]}}\n")
        with pytest.raises(ValueError, match="has no checkpoint"):
            resolve(preset)
        assert resolve(preset, allow_untrained=True).recon_size == SIZE
    UnetReconstructor(SIZE, **TINY_UNET).save(tmp_path / "weights" / "u.pt")
    (tmp_path / "trained.yaml").write_text(
        "model: unet\nconfig: {recon_size: [20, 18], chans: 4, num_pool_layers: 2}\n"
        "checkpoint: weights/u.pt\n"
    )
    loaded = resolve(tmp_path / "trained.yaml")
    assert type(loaded) is UnetReconstructor and not loaded.training


def test_checkpoints_by_suffix_base_dir_and_path(tmp_path):
    torch.manual_seed(0)
    model = UnetReconstructor(SIZE, **TINY_UNET)
    model.save(tmp_path / "m.pt")
    for spec, base in (
        (tmp_path / "m.pt", None),
        (str(tmp_path / "m.pt"), None),
        ("m.pt", tmp_path),
    ):
        loaded = resolve(spec, base_dir=base)
        assert type(loaded) is UnetReconstructor
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key])
    model.save(tmp_path / "m.ckpt")  # any suffix: a Path (or an existing file) is a checkpoint
    assert type(resolve(tmp_path / "m.ckpt")) is UnetReconstructor
    assert type(resolve(str(tmp_path / "m.ckpt"))) is UnetReconstructor
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "nope")
    assert describe_reconstructor(str(tmp_path / "m.pt")) == "m.pt"


def test_unknown_specs_are_refused():
    with pytest.raises(ValueError, match="is not a preset"):
        resolve("resnet")
    with pytest.raises(ValueError, match="not a subclass"):
        resolve("collections:OrderedDict", recon_size=SIZE)
    with pytest.raises(ValueError, match="a name, path or Reconstructor"):
        resolve(3)  # type: ignore[arg-type]


def test_checkpoint_of_a_non_builtin_class_needs_trust(tmp_path, monkeypatch):
    name = "resolve_untrusted_recon"
    marker = tmp_path / "imported"
    folder = tmp_path / "mod"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")
        from activemri.recon_models import ZeroFilled
        class Mine(ZeroFilled):
            pass
        """)
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    payload = {
        "format": "activemri.reconstructor/1",
        "class_path": f"{name}:Mine",
        "config": {"recon_size": list(SIZE)},
        "state_dict": {},
    }
    torch.save(payload, tmp_path / "mine.pt")
    with pytest.raises(CheckpointError, match="not built into activemri"):
        resolve(tmp_path / "mine.pt")
    assert not marker.exists()
    loaded = resolve(tmp_path / "mine.pt", trust_class_path=True)
    assert marker.exists() and type(loaded).__name__ == "Mine"
    # A class path the user writes (spec or own preset) is theirs: imported without the flag.
    assert type(resolve(f"{name}:Mine", recon_size=SIZE)).__name__ == "Mine"


def test_trusted_path_that_is_no_reconstructor_is_refused(tmp_path):
    payload = {
        "format": "activemri.reconstructor/1",
        "class_path": "collections:OrderedDict",
        "config": {},
        "state_dict": {},
    }
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not a Reconstructor"):
        resolve(tmp_path / "odd.pt", trust_class_path=True)


B, C, H, W = 3, 2, 37, 31
h, w = 20, 17


def _reset(core):
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(B, C, H, W, dtype=torch.complex64, generator=gen)
    target = torch.rand(B, h, w, generator=gen)
    valid = torch.ones(B, W, dtype=torch.bool)
    valid[:, :2] = False
    mask = torch.zeros(B, W, dtype=torch.bool)
    mask[:, 14:17] = True
    num_low = torch.full((B,), 3)
    return core.initial(k, target, torch.ones(B), valid, mask, num_low, torch.full((B,), 8))


def test_user_linear_class_gets_the_core_fast_path(user_module):
    fast = AcquisitionCore(resolve(f"{user_module}:ScaledZeroFilled", recon_size=(h, w)))
    slow = AcquisitionCore(resolve(f"{user_module}:SlowScaledZeroFilled", recon_size=(h, w)))
    assert fast.fast_linear and not slow.fast_linear
    assert fast.to_dict()["fast_linear"] is True
    sf, ss = _reset(fast), _reset(slow)
    assert sf.coil_images is not None and ss.coil_images is None
    torch.testing.assert_close(sf.recon, ss.recon, atol=1e-5, rtol=0)
    lines = torch.arange(W).repeat(B, 1)
    torch.testing.assert_close(
        fast.score_candidates(sf, lines), slow.score_candidates(ss, lines), atol=1e-5, rtol=0
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        a = torch.randint(0, W, (B,), generator=gen)
        nf, ns = fast.transition(sf, a), slow.transition(ss, a)
        assert torch.equal(nf.repeated, ns.repeated)
        torch.testing.assert_close(fast.reward(sf, nf), slow.reward(ss, ns), atol=1e-5, rtol=0)
        torch.testing.assert_close(nf.recon, ns.recon, atol=1e-5, rtol=0)
        sf, ss = nf, ns


def test_env_builder_goes_through_resolve(user_module, tiny_data):
    from activemri.envs.config import EnvConfig, build_reconstructor_for_env

    config = EnvConfig(data=str(tiny_data), reconstructor=f"{user_module}:Learned")
    with pytest.raises(ValueError, match="untrained"):
        build_reconstructor_for_env(config, SIZE, torch.device("cpu"))
    config = EnvConfig(data=str(tiny_data), reconstructor=f"{user_module}:ScaledZeroFilled")
    model = build_reconstructor_for_env(config, SIZE, torch.device("cpu"))
    assert model.linear_in_columns and model.recon_size == SIZE
    with pytest.raises(ValueError, match="outputs"):
        build_reconstructor_for_env(
            EnvConfig(data=str(tiny_data), reconstructor=ZeroFilled((8, 8))),
            SIZE,
            torch.device("cpu"),
        )


def _package_imports(path: Path) -> set[str]:
    """Every ``activemri`` module a file imports, at any level (``TYPE_CHECKING`` excluded)."""
    import ast

    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("activemri")}


def test_checkpoint_and_classes_sit_below_the_contract():
    folder = Path(__file__).resolve().parents[2] / "activemri" / "recon_models"
    assert "activemri.recon_models.checkpoint" in _package_imports(folder / "base.py")
    assert _package_imports(folder / "classes.py") == set()
    assert {m for m in _package_imports(folder / "checkpoint.py") if "recon_models" in m} == {
        "activemri.recon_models.classes"
    }
