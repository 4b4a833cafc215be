"""Records: data classes that cost little to define, for the modules ``flue run`` imports.

``@dataclass`` builds every method by compiling source text and calls ``inspect.signature``
for the docstring; importing ``dataclasses`` alone pulls ``inspect``, ``ast`` and
``tokenize``. On ``flue run``'s path, where some twenty classes are defined before a sandbox
that lives a few milliseconds, that was a fifth of the start-up time. ``@record`` makes the same
kind of class (``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` when frozen, ``__slots__``,
``__match_args__``, pickling of frozen slotted instances) from shared methods and an
``__init__`` closed over the fields (nothing is compiled per class: compiling a generated
``__init__`` was most of a class's cost), and type checkers see it as a dataclass
(``typing.dataclass_transform``).

``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` work on records: their
``__dataclass_fields__`` is made, with ``dataclasses.Field`` objects, the first time someone
asks for it (and ``dataclasses`` imported then).

Supported: fields with defaults or ``field(default=..., default_factory=...)``, ``frozen``,
``slots``, inheritance from another record, ``ClassVar`` annotations (skipped). Not
supported: ``__post_init__``, ``InitVar``, ``kw_only``, ordering.
"""

from __future__ import annotations

import operator

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a third of a start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")
else:  # what the decorators below do at run time, where only type checkers would look
    def overload(f):
        return f

    def dataclass_transform(**_kw):
        return overload


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _FieldSpec:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


@overload
def field(*, default: _T) -> _T: ...
# (ruff's F811 below: it cannot tell the run-time stand-in for typing.overload from the real one)
@overload
def field(*, default_factory: Callable[[], _T]) -> _T: ...  # noqa: F811
def field(*, default: Any = MISSING, default_factory: Any = MISSING) -> Any:  # noqa: F811
    """A field's default (``default``) or the callable that makes one per instance."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _FieldSpec(default, default_factory)


class _LazyFields:
    """``__dataclass_fields__``: real ``dataclasses.Field`` objects, made on first use."""

    def __get__(self, obj: object, cls: type) -> dict[str, Any]:
        import dataclasses

        out: dict[str, Any] = {}
        for name, typ, default, factory in cls.__record_fields__:  # type: ignore[attr-defined]
            f: Any = (dataclasses.field(default_factory=factory) if factory is not MISSING
                      else dataclasses.field(default=default))
            f.name = name
            f.type = typ
            f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
            out[name] = f
        type.__setattr__(cls, "__dataclass_fields__", out)
        return out


def _frozen_setattr(self: object, name: str, value: Any) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _repr(self: Any) -> str:
    names = type(self).__match_args__
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        get = self.__record_values__
        return bool(get(self) == get(other))
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__record_values__(self))


def _getstate(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, n) for n in type(self).__match_args__)


def _setstate(self: Any, state: tuple[Any, ...]) -> None:
    for name, value in zip(type(self).__match_args__, state, strict=True):
        object.__setattr__(self, name, value)


def _values(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) > 1:
        return operator.attrgetter(*names)  # a tuple of the values
    if names:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _make_init(cls_name: str, fields: list[tuple[str, Any, Any, Any]], frozen: bool) -> Any:
    """One ``__init__`` for any record, closed over its fields: no source compiled per class
    (``exec`` of a generated ``__init__``, as @dataclass does, was most of a record's cost).
    It binds arguments as a generated one would and raises the same TypeErrors."""
    specs: list[tuple[str, Any, Any]] = []
    for name, _typ, default, factory in fields:
        if default is MISSING and factory is MISSING and any(
                d is not MISSING or f is not MISSING for _, d, f in specs):
            raise TypeError(f"{cls_name}: non-default field {name!r} follows a default one")
        specs.append((name, default, factory))
    count = len(specs)
    names = tuple(name for name, _, _ in specs)
    put = object.__setattr__  # past a frozen record's own __setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not kwargs and len(args) == count:  # every field given, in order: the common case
            for name, value in zip(names, args):
                put(self, name, value)
            return
        if len(args) > count:
            raise TypeError(f"{cls_name}() takes {count} positional arguments but "
                            f"{len(args)} were given")
        for (name, _d, _f), value in zip(specs, args):
            if name in kwargs:
                raise TypeError(f"{cls_name}() got multiple values for argument {name!r}")
            put(self, name, value)
        for name, default, factory in specs[len(args):]:
            if name in kwargs:
                value = kwargs.pop(name)  # (a dict of this call's own)
            elif factory is not MISSING:
                value = factory()
            elif default is not MISSING:
                value = default
            else:
                raise TypeError(f"{cls_name}() missing required argument: {name!r}")
            put(self, name, value)
        if kwargs:
            raise TypeError(f"{cls_name}() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")

    __init__.__qualname__ = f"{cls_name}.__init__"
    return __init__


def _process(cls: type, frozen: bool, slots: bool) -> type:
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - inspect costs its import
    fields: list[tuple[str, Any, Any, Any]] = []
    for base in reversed(cls.__mro__[1:]):
        for item in base.__dict__.get("__record_fields__", ()):
            fields = [f for f in fields if f[0] != item[0]] + [item]
    names_own: list[str] = []
    for name, typ in own.items():
        if isinstance(typ, str) and typ.replace("typing.", "").startswith("ClassVar"):
            continue
        default = cls.__dict__.get(name, MISSING)
        factory = MISSING
        if isinstance(default, _FieldSpec):
            default, factory = default.default, default.default_factory
        fields = [f for f in fields if f[0] != name] + [(name, typ, default, factory)]
        names_own.append(name)
    names = tuple(f[0] for f in fields)
    ns = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    if slots:
        inherited = {s for b in cls.__mro__[1:] for s in b.__dict__.get("__slots__", ())}
        ns["__slots__"] = tuple(n for n in names_own if n not in inherited)
        for n in names_own:
            ns.pop(n, None)
    else:
        for n in names_own:  # class attributes hold plain defaults, as with @dataclass
            if isinstance(ns.get(n), _FieldSpec):
                spec = ns[n]
                if spec.default is MISSING:
                    ns.pop(n)
                else:
                    ns[n] = spec.default
    ns["__record_fields__"] = tuple(fields)
    ns["__record_values__"] = staticmethod(_values(names))
    ns["__match_args__"] = names
    ns["__dataclass_fields__"] = _LazyFields()
    ns["__init__"] = _make_init(cls.__qualname__, fields, frozen)
    ns.setdefault("__repr__", _repr)
    ns.setdefault("__eq__", _eq)
    if frozen:
        ns["__setattr__"] = _frozen_setattr
        ns["__delattr__"] = _frozen_delattr
        if ns.get("__hash__") is None:  # none of its own (defining __eq__ sets None)
            ns["__hash__"] = _hash
        if slots:
            ns["__getstate__"] = _getstate
            ns["__setstate__"] = _setstate
    elif "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
        ns["__hash__"] = None  # eq without frozen: unhashable, as with @dataclass
    if not slots:
        for key in ("__setattr__", "__delattr__", "__init__", "__repr__", "__eq__", "__hash__",
                    "__record_fields__", "__record_values__", "__match_args__",
                    "__dataclass_fields__", "__getstate__", "__setstate__"):
            if key in ns:
                type.__setattr__(cls, key, ns[key])
        return cls
    new = type(cls)(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


@overload
@dataclass_transform(field_specifiers=(field,))
def record(cls: type[_T], /) -> type[_T]: ...
@overload
@dataclass_transform(field_specifiers=(field,))
def record(*, frozen: bool = False,  # noqa: F811
           slots: bool = False) -> Callable[[type[_T]], type[_T]]: ...
@dataclass_transform(field_specifiers=(field,))
def record(cls: type[_T] | None = None, /, *, frozen: bool = False,  # noqa: F811
           slots: bool = False) -> Any:
    """Make ``cls`` a record (see the module's docstring); used like ``@dataclass``."""
    def wrap(c: type[_T]) -> type[_T]:
        return _process(c, frozen, slots)

    return wrap if cls is None else wrap(cls)
