from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from activemri._config import from_mapping


@dataclass(frozen=True)
class Inner:
    every: int = 10
    split: str | None = "val"


@dataclass(frozen=True)
class Outer:
    name: str
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    path: Path | None = None
    maybe: Optional[int] = None  # noqa: UP045 (the typing spelling is supported too)
    names: tuple[str, ...] = ()
    pair: tuple[int, str] = (0, "")
    values: list[float] = field(default_factory=list)
    seq: Sequence[int] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    kind: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    anything: Any = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def test_values_are_checked_and_converted():
    out = from_mapping(
        Outer,
        {
            "name": "x",
            "flag": True,
            "count": 3,
            "rate": 2,
            "path": "a/b.pt",
            "maybe": 4,
            "names": ["p", "q"],
            "pair": [1, "one"],
            "values": (1, 2.5),
            "seq": [1, 2],
            "options": {"k": [1]},
            "kind": "b",
            "inner": {"every": 5},
            "anything": object,
        },
    )
    assert out.names == ("p", "q") and isinstance(out.names, tuple)
    assert out.pair == (1, "one")
    assert out.values == [1, 2.5] and isinstance(out.values, list)
    assert out.seq == [1, 2]
    assert out.path == Path("a/b.pt") and isinstance(out.path, Path)
    assert out.rate == 2 and out.maybe == 4 and out.kind == "b"
    assert out.inner == Inner(every=5, split="val")
    assert out.options == {"k": [1]}
    assert from_mapping(Outer, {"name": "y"}) == Outer(name="y")


def test_unknown_keys_name_the_file_the_section_and_the_allowed_keys():
    with pytest.raises(ValueError) as info:
        from_mapping(Outer, {"name": "x", "cuont": 3}, source="p.yaml", section="train")
    message = str(info.value)
    assert message.startswith("p.yaml: unknown key(s) ['cuont'] in train; allowed: [")
    assert "'count'" in message and "'source'" in message
    with pytest.raises(ValueError, match=r"^unknown key\(s\) \['zz'\] in Outer; allowed"):
        from_mapping(Outer, {"name": "x", "zz": 1})


def test_excluded_fields_may_not_be_given():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['source'\]") as info:
        from_mapping(Outer, {"name": "x", "source": "s"}, exclude=("source",))
    assert "'source'" not in str(info.value).split("allowed:")[1]


def test_missing_required_keys_are_named():
    with pytest.raises(ValueError, match=r"p\.yaml: Outer needs key\(s\) \['name'\]"):
        from_mapping(Outer, {}, source="p.yaml")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("count", "two", r"p\.yaml: train\.count must be int, got 'two' \(str\)"),
        ("count", True, r"train\.count must be int, got True \(bool\)"),
        ("count", 2.0, r"train\.count must be int, got 2\.0 \(float\)"),
        ("flag", 1, r"train\.flag must be bool, got 1 \(int\)"),
        ("rate", False, r"train\.rate must be float, got False"),
        ("rate", "0.1", r"train\.rate must be float"),
        ("name", 3, r"train\.name must be str"),
        ("path", 3, r"train\.path must be a path or None, got 3"),
        ("maybe", "x", r"train\.maybe must be int or None"),
        ("names", "abc", r"train\.names must be a list of str, got 'abc'"),
        ("names", ["a", 1], r"train\.names must be a list of str, got \['a', 1\]"),
        ("pair", [1], r"train\.pair must be a list of 2 \(int, str\)"),
        ("values", [1, "x"], r"train\.values must be a list of float"),
        ("options", [1], r"train\.options must be a mapping, got \[1\]"),
        ("kind", "c", r"train\.kind must be one of 'a', 'b', got 'c'"),
        ("inner", 3, r"train\.inner must be a mapping of Inner fields, got 3"),
    ],
)
def test_wrong_types_name_the_file_and_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        from_mapping(Outer, {"name": "x", key: value}, source="p.yaml", section="train")


def test_bool_and_int_are_kept_apart_but_ints_are_floats():
    assert from_mapping(Outer, {"name": "x", "rate": 1}).rate == 1
    assert from_mapping(Outer, {"name": "x", "flag": False}).flag is False
    with pytest.raises(ValueError, match="flag must be bool"):
        from_mapping(Outer, {"name": "x", "flag": 0})
    with pytest.raises(ValueError, match="count must be int"):
        from_mapping(Outer, {"name": "x", "count": False})


def test_optional_fields_accept_none_and_others_do_not():
    out = from_mapping(Outer, {"name": "x", "maybe": None, "path": None})
    assert out.maybe is None and out.path is None
    with pytest.raises(ValueError, match=r"count must be int, got None \(NoneType\)"):
        from_mapping(Outer, {"name": "x", "count": None})


def test_nested_dataclasses_are_checked_with_their_section():
    with pytest.raises(ValueError, match=r"p\.yaml: unknown key\(s\) \['each'\] in inner"):
        from_mapping(Outer, {"name": "x", "inner": {"each": 3}}, source="p.yaml")
    with pytest.raises(ValueError, match=r"p\.yaml: a\.inner\.every must be int, got 'x'"):
        from_mapping(Outer, {"name": "x", "inner": {"every": "x"}}, source="p.yaml", section="a")
    given = Inner(every=1)
    assert from_mapping(Outer, {"name": "x", "inner": given}).inner is given


def test_post_init_errors_are_prefixed_with_the_source():
    with pytest.raises(ValueError, match=r"^p\.yaml: count must be >= 0, got -1$"):
        from_mapping(Outer, {"name": "x", "count": -1}, source=Path("p.yaml"))
    with pytest.raises(ValueError, match=r"^count must be >= 0"):
        from_mapping(Outer, {"name": "x", "count": -1})


def test_non_mappings_and_non_dataclasses_are_refused():
    with pytest.raises(ValueError, match=r"p\.yaml: train must be a mapping, got \[1\]"):
        from_mapping(Outer, [1], source="p.yaml", section="train")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dataclass"):
        from_mapping(dict, {})
