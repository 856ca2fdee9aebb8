"""The fastMRI-identical masks against masks recorded from fastMRI itself (no fastmri import).

``tests/fixtures/fastmri_masks.npz`` was written by ``tests/fixtures/make_fastmri_masks.py``
from fastmri 0.3.0's ``RandomMaskFunc``, ``EquiSpacedMaskFunc`` and
``EquispacedMaskFractionFunc``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from activemri.masks import (
    FASTMRI_MASK_TYPES,
    FastMRIEquispacedFractionMask,
    FastMRIEquispacedMask,
    FastMRIMask,
    FastMRIRandomMask,
    center_block,
    fastmri_volume_seed,
)

FIXTURE = Path(__file__).parent / "fixtures" / "fastmri_masks.npz"
CLASSES: dict[str, type[FastMRIMask]] = {
    "random": FastMRIRandomMask,
    "equispaced": FastMRIEquispacedMask,
    "equispaced_fraction": FastMRIEquispacedFractionMask,
}


def _recorded() -> list[tuple[dict, list[tuple[np.ndarray, int]]]]:
    data = np.load(FIXTURE, allow_pickle=False)
    cases = json.loads(str(data["cases"]))
    bits = np.unpackbits(data["masks"], count=int(data["num_bits"])).astype(bool)
    num_low = data["num_low"].tolist()
    out, pos, k = [], 0, 0
    for case in cases:
        results = []
        for call in case["calls"]:
            width = call["shape"][-2]
            results.append((bits[pos : pos + width], num_low[k]))
            pos, k = pos + width, k + 1
        out.append((case, results))
    assert pos == bits.size and k == len(num_low)
    return out


RECORDED = _recorded()


def _build(case: dict) -> FastMRIMask:
    return CLASSES[case["func"]](
        case["center_fractions"], case["accelerations"], seed=case["seed"],
        allow_any_combination=case["allow_any_combination"],
    )  # fmt: skip


def _seed(call: dict) -> int | tuple[int, ...] | None:
    return fastmri_volume_seed(call["fname"]) if call["fname"] is not None else call["seed"]


def test_fixture_covers_what_it_claims():
    meta = json.loads(str(np.load(FIXTURE)["meta"]))
    assert meta["fastmri"] == "0.3.0"
    assert FIXTURE.stat().st_size < 100_000
    calls = [(case, call) for case, _ in RECORDED for call in case["calls"]]
    for func in CLASSES:
        assert sum(case["func"] == func for case, _ in RECORDED) >= 60
    widths = {call["shape"][-2] for _, call in calls}
    assert {31, 128, 368, 372} <= widths
    assert any(call["fname"] for _, call in calls)
    assert any(call["seed"] is not None for _, call in calls)
    assert any(call["offset"] is not None for _, call in calls)
    assert any(case["allow_any_combination"] for case, _ in RECORDED)


@pytest.mark.parametrize("func", sorted(CLASSES))
def test_bit_identical_to_recorded_fastmri_masks(func):
    checked = 0
    for case, results in RECORDED:
        if case["func"] != func:
            continue
        mask_func = _build(case)
        for call, (expected, expected_low) in zip(case["calls"], results, strict=True):
            mask, num_low = mask_func(tuple(call["shape"]), call["offset"], _seed(call))
            assert mask.dtype == bool and mask.shape == expected.shape
            assert np.array_equal(mask, expected), (case, call)
            assert num_low == expected_low, (case, call)
            checked += 1
    assert checked >= 180


def test_width_as_int_equals_fastmri_shape():
    for case, results in RECORDED[::7]:
        mask_func = _build(case)
        for call, (expected, expected_low) in zip(case["calls"], results, strict=True):
            mask, num_low = mask_func(call["shape"][-2], call["offset"], _seed(call))
            assert np.array_equal(mask, expected) and num_low == expected_low


def test_seeded_call_restores_the_generator():
    mask_func = FastMRIRandomMask([0.08, 0.04], [4, 8], seed=3)
    twin = copy.deepcopy(mask_func)
    first = mask_func(368)[0]
    assert np.array_equal(first, twin(368)[0])
    volume = mask_func(368, seed=fastmri_volume_seed("file1000001.h5"))[0]
    # The seeded call leaves the stream where it was: both objects stay in step.
    assert np.array_equal(mask_func(368)[0], twin(368)[0])
    assert np.array_equal(volume, twin(368, seed=fastmri_volume_seed("file1000001.h5"))[0])
    # A seeded call does not depend on the generator's state either.
    fresh = FastMRIRandomMask([0.08, 0.04], [4, 8], seed=99)
    assert np.array_equal(volume, fresh(368, seed=fastmri_volume_seed("file1000001.h5"))[0])


def test_seed_raised_inside_restores_state():
    mask_func = FastMRIEquispacedFractionMask([0.3], [4], seed=1)
    state = mask_func.rng.get_state()[1].copy()
    with pytest.raises(ValueError, match="center fraction must be below"):
        mask_func(368, seed=5)
    assert np.array_equal(mask_func.rng.get_state()[1], state)


def test_center_block_and_equispaced_offset():
    mask, num_low = FastMRIEquispacedMask([0.08], [4])(368, offset=1)
    assert num_low == round(368 * 0.08)
    assert (mask & center_block(368, num_low)).sum() == num_low
    outside = mask & ~center_block(368, num_low)
    assert (np.flatnonzero(outside) % 4 == 1).all()


def test_volume_seed_is_fastmri_formula():
    assert fastmri_volume_seed("file1000001.h5") == tuple(map(ord, "file1000001.h5"))
    assert fastmri_volume_seed("file1000001.h5")[:4] == (102, 105, 108, 101)
    assert fastmri_volume_seed(Path("/data/knee/file1000001.h5")) == fastmri_volume_seed(
        "file1000001.h5"
    )
    with pytest.raises(ValueError, match="no file name"):
        fastmri_volume_seed("")


def test_registry_names():
    expected = {
        "fastmri_random": FastMRIRandomMask,
        "fastmri_equispaced": FastMRIEquispacedMask,
        "fastmri_equispaced_fraction": FastMRIEquispacedFractionMask,
    }
    assert expected == FASTMRI_MASK_TYPES


@pytest.mark.parametrize("cls", sorted(CLASSES.values(), key=lambda c: c.__name__))
@pytest.mark.parametrize(
    ("fractions", "accelerations", "match"),
    [
        ([0.08, 0.04], [4], "2 center fractions but 1 accelerations"),
        ([], [], "must not be empty"),
        ([1.0], [4], r"center fractions must be in \[0, 1\)"),
        ([-0.1], [4], r"center fractions must be in \[0, 1\)"),
        ([0.08], [0.5], "accelerations must be finite and >= 1"),
        ([0.08], [0], "accelerations must be finite and >= 1"),
        ([0.08], [float("nan")], "accelerations must be finite and >= 1"),
    ],
)
def test_bad_arguments_are_clear_errors(cls, fractions, accelerations, match):
    with pytest.raises(ValueError, match=match):
        cls(fractions, accelerations)


def test_call_errors():
    mask_func = FastMRIRandomMask([0.08], [4])
    with pytest.raises(ValueError, match="at least 3 dims"):
        mask_func((640, 368))
    with pytest.raises(ValueError, match="width must be >= 1"):
        mask_func(0)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        mask_func(368, offset=-1)
    with pytest.raises(ValueError, match="whole-number accelerations"):
        FastMRIEquispacedMask([0.08], [4.5])
    with pytest.raises(ValueError, match="keeps all 3 columns"):
        FastMRIRandomMask([0.9], [2])(3)
    # Mismatched lengths are fine when any combination is allowed.
    FastMRIRandomMask([0.08], [4, 8], allow_any_combination=True)(368)


class _Meta:
    def __init__(self, name: str, valid: np.ndarray) -> None:
        self.file = Path("/data") / name
        self._valid = valid

    def valid_columns(self, width: int):
        import torch

        assert width == self._valid.size
        return torch.from_numpy(self._valid)


class _Sample:
    def __init__(self, name: str, valid: np.ndarray) -> None:
        import torch

        self.kspace = torch.zeros(1, 4, valid.size, dtype=torch.complex64)
        self.meta = _Meta(name, valid)


def test_recon_eval_rule_gives_recorded_fastmri_masks():
    from activemri.recon_models.evaluate import fixed_mask_rule

    assert 0.32 / 4 == 0.08 and 0.32 / 8 == 0.04  # the rule's fraction is fastMRI's exactly
    checked = 0
    for case, results in RECORDED:
        single = len(case["accelerations"]) == 1 and not case["allow_any_combination"]
        if not single or case["center_fractions"][0] != 0.32 / case["accelerations"][0]:
            continue
        rule = fixed_mask_rule(f"fastmri_{case['func']}", case["accelerations"][0], True)
        for call, (expected, expected_low) in zip(case["calls"], results, strict=True):
            if call["fname"] is None or call["offset"] is not None:
                continue
            valid = np.ones(expected.size, dtype=bool)
            valid[:3] = valid[-2:] = False
            for rng_seed in (0, 1):  # the generator is not used with fastMRI seeding
                mask, num_low = rule(_Sample(call["fname"], valid), np.random.default_rng(rng_seed))
                assert np.array_equal(mask, expected & valid) and num_low == expected_low
            checked += 1
    assert checked >= 20


def test_recon_eval_rule_errors():
    from activemri.recon_models.evaluate import fixed_mask_rule

    with pytest.raises(ValueError, match="fastMRI seeding needs a fastMRI mask type"):
        fixed_mask_rule("random", 4.0, fastmri_seeding=True)
    with pytest.raises(ValueError, match="unknown mask type"):
        fixed_mask_rule("nope", 4.0)
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        fixed_mask_rule("fastmri_random", 0.0)
    with pytest.raises(ValueError, match="whole-number accelerations"):
        fixed_mask_rule("fastmri_equispaced", 4.5)
    rule = fixed_mask_rule("fastmri_random", 4.0)  # without fastMRI seeding: from the generator
    valid = np.ones(368, dtype=bool)
    first = rule(_Sample("file1000001.h5", valid), np.random.default_rng(3))[0]
    assert np.array_equal(
        first, rule(_Sample("file1000001.h5", valid), np.random.default_rng(3))[0]
    )


def test_cli_recon_eval_with_fastmri_masks(knee_like, tmp_path):
    from activemri.cli import main
    from activemri.data import SliceDataset
    from activemri.recon_models.evaluate import MaskedSlices, fixed_mask_rule
    from activemri.recon_models.zero_filled import ZeroFilled

    model = tmp_path / "model.pt"
    ZeroFilled((320, 320)).save(model)
    out = tmp_path / "eval.json"
    args = ["recon", "eval", "--checkpoint", str(model), "--data", str(knee_like)]
    args += ["--split", "all"]
    fastmri = ["--mask-type", "fastmri_random", "--fastmri-seeding"]
    assert main([*args, *fastmri, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mask_type"] == "fastmri_random" and result["fastmri_seeding"] is True
    assert main([*args, "--mask-type", "random", "--fastmri-seeding"]) == 2
    assert main([*args, "--mask-type", "fastmri_equispaced", "--acceleration", "4.5"]) == 2
    # The masks recon eval uses are fastMRI's for each file, padded columns zeroed.
    dataset = SliceDataset(knee_like)
    masked = MaskedSlices(dataset, fixed_mask_rule("fastmri_random", 4.0, True), 0, True)
    for i in range(len(masked)):
        item = masked[i]
        name = dataset.slice_meta(i).file.name
        expected, _ = FastMRIRandomMask([0.08], [4])(368, seed=fastmri_volume_seed(name))
        assert not item["valid"].all()
        assert np.array_equal(item["mask"].numpy(), expected & item["valid"].numpy())
    # fastMRI fixes the rate, not the count: the acceleration run is reported next to 4x.
    ratios = [
        float(masked[i]["valid"].sum() / (masked[i]["mask"] & masked[i]["valid"]).sum())
        for i in range(len(masked))
    ]
    assert result["actual_acceleration"] == pytest.approx(np.mean(ratios))
    assert result["actual_acceleration"] != pytest.approx(4.0, abs=1e-3)
