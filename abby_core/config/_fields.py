"""How a variable is declared: :func:`var` on a field of a :class:`Section`, and the shared value parsers.

:func:`declared` walks a model and its sections into ``{VARIABLE: (section path, field)}``;
it refuses a variable declared twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

__all__ = ["MB", "Ids", "Section", "csv_ints", "declared", "entries", "var"]

MB = 1_000_000


def csv_ints(value: Any) -> Any:
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",")]
        return [p for p in parts if p]
    return value


def entries(
    value: Any, fields: tuple[tuple[str, type[int] | type[float]], ...], check: Callable[[dict[str, Any]], str | None]
) -> Any:
    """``A:B:C`` entries separated by commas, as dicts of ``fields``; ``check`` says what is wrong with one."""
    if not isinstance(value, str):
        return value
    shape = ":".join(name.upper() for name, _ in fields)
    found = []
    for entry in csv_ints(value):
        parts = entry.split(":")
        if len(parts) != len(fields):
            raise ValueError(f"entry {entry!r} is not {shape}")
        try:
            item = {name: kind(part) for (name, kind), part in zip(fields, parts, strict=True)}
        except ValueError:
            raise ValueError(f"entry {entry!r} has a part that is not a number") from None
        problem = check(item)
        if problem is not None:
            raise ValueError(f"entry {entry!r} {problem}")
        found.append(item)
    return found


#: Ids separated by commas (ADMIN_ROLE_IDS, IMAGE_CHANNEL_IDS).
Ids = Annotated[tuple[int, ...], BeforeValidator(csv_ints)]


def var(default: Any, name: str, description: str, **bounds: Any) -> Any:
    """The field of one variable: its default, its name in the environment, what it allows."""
    return Field(default, alias=name, description=description, **bounds)


class Section(BaseModel):
    # Built from the variables (by alias) or, in tests and tools, by field name; a name that
    # is neither is refused rather than ignored.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty value means "not set" for a variable that may be unset."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.default is None and isinstance(value, str) and not value.strip():
            return None
        return value


def declared(model: type[BaseModel], path: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """``{VARIABLE: (section path, field)}`` for every variable ``model`` and its sections declare."""
    found: dict[str, tuple[tuple[str, ...], FieldInfo]] = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            inner = declared(info.annotation, (*path, name))
        else:
            inner = {info.alias: (path, info)} if info.alias else {}
        if set(inner) & set(found):  # a second declaration would silently shadow the first
            raise TypeError(f"{', '.join(sorted(set(inner) & set(found)))} declared twice")
        found.update(inner)
    return found
