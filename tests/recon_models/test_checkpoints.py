from __future__ import annotations

import pickle
import re
import textwrap

import pytest
import torch
from recon_helpers import TINY_UNET, TINY_VARNET, make_model

from activemri.recon_models import (
    CheckpointError,
    Reconstructor,
    UnetReconstructor,
    VarNetReconstructor,
    reconstructor_from_preset,
)
from activemri.recon_models.unet import Unet


@pytest.mark.parametrize("name", ["unet", "varnet", "tv", "zero_filled"])
def test_round_trip_is_bit_exact(name, tmp_path, batch_factory):
    torch.manual_seed(0)
    model = make_model(name, uncertainty=name in ("unet", "varnet")).eval()
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = Reconstructor.load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    k, mask = batch_factory(2, 1, 24, 22)
    with torch.no_grad():
        assert torch.equal(
            model(k, mask, num_low_frequencies=4).image,
            loaded(k, mask, num_low_frequencies=4).image,
        )
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_extra_and_misshaped_keys_are_rejected(tmp_path):
    model = UnetReconstructor((20, 18), **TINY_UNET)
    path = tmp_path / "m.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    broken = dict(payload, state_dict=dict(payload["state_dict"]))
    broken["state_dict"].pop("unet.conv.layers.0.weight")
    broken["state_dict"]["surprise"] = torch.zeros(1)
    torch.save(broken, tmp_path / "b.pt")
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \['unet.conv.layers.0.weight'\].*unexpected keys \['surprise'\]",
    ):
        Reconstructor.load(tmp_path / "b.pt")
    wrong = dict(payload, config={**payload["config"], "chans": 8})
    torch.save(wrong, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        Reconstructor.load(tmp_path / "w.pt")


def test_wrong_class_and_missing_file(tmp_path):
    path = tmp_path / "m.pt"
    UnetReconstructor((20, 18), **TINY_UNET).save(path)
    with pytest.raises(
        CheckpointError, match=re.escape("not activemri.recon_models.varnet:VarNetReconstructor")
    ):
        VarNetReconstructor.load(path)
    with pytest.raises(FileNotFoundError):
        Reconstructor.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        Reconstructor.load(tmp_path / "junk.pt")


class _Exploit:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['AMRI_MARKER'], 'w').write('pwned')",))


def test_crafted_pickle_does_not_execute(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("AMRI_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "activemri.reconstructor/1", "payload": _Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="nothing in the file was executed"):
        Reconstructor.load(path)
    assert not marker.exists()


def test_untrusted_class_path_is_not_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    module = tmp_path / "evil_recon_mod.py"
    module.write_text(
        textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")
        from activemri.recon_models import ZeroFilled
        class Evil(ZeroFilled):
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = UnetReconstructor((20, 18), **TINY_UNET)
    path = tmp_path / "m.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    torch.save(
        dict(
            payload,
            class_path="evil_recon_mod:Evil",
            config={"recon_size": [20, 18]},
            state_dict={},
        ),
        path,
    )
    with pytest.raises(CheckpointError, match="not built into activemri"):
        Reconstructor.load(path)
    assert not marker.exists()
    loaded = Reconstructor.load(path, trust_class_path=True)
    assert marker.exists() and type(loaded).__name__ == "Evil"


def _fastmri_unet_shapes(prefix: str, in_chans: int, out_chans: int, chans: int, pools: int):
    """Parameter names and shapes of fastMRI's Unet, written from its documented architecture."""
    shapes = {}
    ch_in, ch = in_chans, chans
    for i in range(pools):
        shapes[f"{prefix}down_sample_layers.{i}.layers.0.weight"] = (ch, ch_in, 3, 3)
        shapes[f"{prefix}down_sample_layers.{i}.layers.4.weight"] = (ch, ch, 3, 3)
        ch_in, ch = ch, ch * 2
    shapes[f"{prefix}conv.layers.0.weight"] = (ch, ch_in, 3, 3)
    shapes[f"{prefix}conv.layers.4.weight"] = (ch, ch, 3, 3)
    for i in range(pools):
        shapes[f"{prefix}up_transpose_conv.{i}.layers.0.weight"] = (ch, ch // 2, 2, 2)
        conv = f"{prefix}up_conv.{i}." + ("0." if i == pools - 1 else "")
        shapes[f"{conv}layers.0.weight"] = (ch // 2, ch, 3, 3)
        shapes[f"{conv}layers.4.weight"] = (ch // 2, ch // 2, 3, 3)
        ch //= 2
    shapes[f"{prefix}up_conv.{pools - 1}.1.weight"] = (out_chans, ch, 1, 1)
    shapes[f"{prefix}up_conv.{pools - 1}.1.bias"] = (out_chans,)
    return shapes


def _random_state(shapes):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}


def test_fastmri_unet_state_dict_loads_strictly(batch_factory):
    shapes = _fastmri_unet_shapes("", 1, 1, chans=4, pools=3)
    unet = Unet(1, 1, chans=4, num_pool_layers=3)
    assert {k: tuple(v.shape) for k, v in unet.state_dict().items()} == shapes
    model = UnetReconstructor((20, 18), chans=4, num_pool_layers=3, uncertainty=True)
    k, mask = batch_factory(1, 1, 24, 22)
    before = model(k, mask).image
    model.load_fastmri_state_dict(_random_state(shapes))
    assert not torch.allclose(before, model(k, mask).image)
    with pytest.raises(CheckpointError, match="missing keys"):
        model.load_fastmri_state_dict(
            {k: v for k, v in _random_state(shapes).items() if "conv.layers.0" not in k}
        )


def test_fastmri_varnet_state_dict_loads_strictly():
    cfg = TINY_VARNET
    shapes = _fastmri_unet_shapes(
        "sens_net.norm_unet.unet.", 2, 2, cfg["sens_chans"], cfg["sens_pools"]
    )
    for i in range(cfg["num_cascades"]):
        shapes[f"cascades.{i}.dc_weight"] = (1,)
        shapes.update(
            _fastmri_unet_shapes(f"cascades.{i}.model.unet.", 2, 2, cfg["chans"], cfg["pools"])
        )
    model = VarNetReconstructor((20, 18), **cfg)
    assert {k: tuple(v.shape) for k, v in model.varnet.state_dict().items()} == shapes
    model.load_fastmri_state_dict(_random_state(shapes))


def test_user_class_plugs_in_by_path(tmp_path, monkeypatch, batch_factory):
    (tmp_path / "my_recons.py").write_text(
        textwrap.dedent("""
        import torch
        from activemri.kspace import zero_filled
        from activemri.recon_models import Reconstructor, ReconOutput

        class Scaled(Reconstructor):
            def __init__(self, recon_size, gain=2.0):
                super().__init__(recon_size, {"gain": gain})
                self.gain = torch.nn.Parameter(torch.tensor(gain))

            def forward(self, kspace, mask, **aux):
                self.check_inputs(kspace, mask)
                return ReconOutput(self.gain * zero_filled(kspace, mask, self.recon_size))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = tmp_path / "mine.yaml"
    preset.write_text("model: my_recons:Scaled\nconfig: {recon_size: [20, 18], gain: 3.0}\n")
    model = reconstructor_from_preset(preset)
    k, mask = batch_factory(1, 1, 24, 22)
    zf = make_model("zero_filled")(k, mask).image
    assert torch.allclose(model(k, mask).image, 3.0 * zf)
    path = tmp_path / "w" / "scaled.pt"
    model.save(path)
    assert type(model).load(path).gain.item() == 3.0
    (tmp_path / "with_ckpt.yaml").write_text("model: my_recons:Scaled\ncheckpoint: w/scaled.pt\n")
    assert reconstructor_from_preset(tmp_path / "with_ckpt.yaml").gain.item() == 3.0


def test_preset_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: unet\nconfg: {}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key\(s\) \['confg'\]"):
        reconstructor_from_preset(bad)
    with pytest.raises(ValueError, match="unknown reconstructor"):
        reconstructor_from_preset({"model": "resnet"})
    with pytest.raises(FileNotFoundError):
        reconstructor_from_preset(tmp_path / "missing.yaml")
