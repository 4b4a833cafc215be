"""engine._record: the hot path's cheap data classes behave like @dataclass where the code
relies on it (dataclasses.fields/replace/asdict, equality, hashing, frozen, slots, pickling
through the fork server)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest

from engine._record import field, record
from engine.plan import LaunchPlan, MountOp
from engine.profile.model import Profile, profile_from_data, to_data


@record(frozen=True, slots=True)
class Point:
    """A point."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)
    ORIGIN: ClassVar[str] = "o"


@record
class Box:
    items: list[int] = field(default_factory=list)
    name: str = "box"


@record(frozen=True, slots=True)
class Point3(Point):
    z: int = 0


def test_frozen_slotted_record() -> None:
    p = Point(1, tags=("a",))
    assert p == Point(1, 0, ("a",), {}) and p != Point(2)
    assert p.__eq__((1, 0, ("a",), {})) is NotImplemented
    assert repr(p) == "Point(x=1, y=0, tags=('a',), extra={})"
    assert Point(1).extra is not Point(1).extra  # one default per instance
    assert hash(Point3(1, z=2, extra=None)) == hash(Point3(1, z=2, extra=None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hash(p)  # a dict field: unhashable, as with @dataclass
    assert not hasattr(p, "__dict__") and Point.__slots__ == ("x", "y", "tags", "extra")
    assert Point.ORIGIN == "o" and "ORIGIN" not in Point.__match_args__
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p
    assert Point3.__match_args__ == ("x", "y", "tags", "extra", "z")


def test_dataclasses_functions_work_on_records() -> None:
    p = Point(1, extra={"k": 1})
    assert dataclasses.is_dataclass(p) and dataclasses.is_dataclass(Point)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags", "extra"]
    assert dataclasses.fields(Point)[1].default == 0
    assert dataclasses.replace(p, y=5) == Point(1, 5, (), {"k": 1})
    assert dataclasses.asdict(Point3(1, z=3)) == {"x": 1, "y": 0, "tags": (), "extra": {},
                                                   "z": 3}
    assert Profile.__dataclass_fields__["hostname"].default == "flue"


def test_mutable_record() -> None:
    b = Box()
    b.items.append(1)
    b.name = "b"
    assert b == Box([1], "b") and Box().items is not Box().items
    with pytest.raises(TypeError):
        hash(b)  # eq without frozen: unhashable, as with @dataclass


def test_plan_and_profile_round_trips() -> None:
    prof = Profile("x")
    assert profile_from_data(to_data(prof)) == prof
    op = MountOp("bind", "/usr", src="/usr")
    plan = LaunchPlan("id", ("true",), (), "/", "h", 0, 0, 1, 1, False, 1, (op,), "none",
                      b"\0" * 8, True, extra={"a": "b"})
    assert pickle.loads(pickle.dumps(plan)) == plan
