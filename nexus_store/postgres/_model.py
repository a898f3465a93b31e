"""What the repository needs to know about one model, computed once per model class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from sqlalchemy import Column, Select, Table, select
from sqlalchemy.orm import ClassManager, Mapper, class_mapper

from nexus_store._text import flag
from nexus_store.errors import ValidationError
from nexus_store.postgres._values import TableRules, rules_for
from nexus_store.postgres.models.base import Base

__all__ = ["MANAGED_ON_INSERT", "MANAGED_ON_UPDATE", "ModelInfo", "model_info"]

M = TypeVar("M", bound=Base)

# Set by the repository itself, never by callers.
MANAGED_ON_INSERT = frozenset({"version", "updated_at", "deleted_at"})
MANAGED_ON_UPDATE = MANAGED_ON_INSERT | {"created_at"}


@dataclass(frozen=True)
class ModelInfo(Generic[M]):
    """A model's table, key, columns and conventions (``version``, ``deleted_at``)."""

    model: type[M]
    manager: ClassManager[M]
    table: Table
    rules: TableRules
    key: Column[Any]
    columns: tuple[Column[Any], ...]
    attributes: tuple[str, ...]  # attribute key of each column, same order
    versioned: bool
    soft_delete: bool
    default_order: str | None

    @cached_property
    def select_all(self) -> Select[Any]:
        """``SELECT`` of every column, built once: coercing the columns is most of what
        building a page's statement costs; ``.where()`` and friends copy it cheaply."""
        return select(*self.columns)

    def materialize(self, row: Sequence[Any]) -> M:
        """A model instance holding ``row`` as loaded state (no change history)."""
        return self.materialize_all((row,))[0]

    def materialize_all(self, rows: Sequence[Sequence[Any]]) -> list[M]:
        """A model instance per row, holding it as loaded state (no change history); in one
        loop, as a call and two attribute lookups per row were a sixth of a page's."""
        new_instance, attributes = self.manager.new_instance, self.attributes
        instances = []
        for row in rows:
            instance = new_instance()
            instance.__dict__.update(zip(attributes, row, strict=True))
            instances.append(instance)
        return instances

    @cached_property
    def positions(self) -> dict[str, int]:
        """Column name -> its position in ``columns`` (and in every row of ``select_all``).
        Not ``columns.index(column)``: ``Column.__eq__`` builds a SQL expression per probe."""
        return {column.name: position for position, column in enumerate(self.columns)}

    def value(self, instance: M, column: str) -> Any:
        """The value of ``column`` (a column name) held by ``instance``."""
        return instance.__dict__[self.attributes[self.positions[column]]]

    def where_key(self, key: Any) -> Any:
        return self.key == self.rules.convert(self.key.name, key, "id")

    def visible(self, include_deleted: bool) -> list[Any]:
        """The conditions hiding soft-deleted rows, unless ``include_deleted``."""
        if not flag("include_deleted", include_deleted) and self.soft_delete:
            return [self.table.c.deleted_at.is_(None)]
        return []


_infos: dict[type[Base], ModelInfo[Any]] = {}


def model_info(model: type[M]) -> ModelInfo[M]:
    """The (cached) facts of ``model``; ValidationError if it is not a usable model."""
    try:
        info = _infos.get(model)
    except TypeError:  # unhashable: not a class at all
        info = None
    if info is None:
        if not (isinstance(model, type) and issubclass(model, Base)):
            raise ValidationError("model", f"{model!r} is not a model class on Base")
        mapper: Mapper[M] = class_mapper(model)
        table = mapper.local_table
        if not isinstance(table, Table) or len(table.primary_key.columns) != 1:
            raise ValidationError("model", f"{model.__name__} needs a single-column key")
        columns = tuple(table.columns)
        info = _infos[model] = ModelInfo(
            model=model,
            manager=mapper.class_manager,
            table=table,
            rules=rules_for(table),
            key=next(iter(table.primary_key.columns)),
            columns=columns,
            attributes=tuple(mapper.get_property_by_column(c).key for c in columns),
            versioned="version" in table.columns,
            soft_delete="deleted_at" in table.columns,
            default_order="created_at" if "created_at" in table.columns else None,
        )
    return info
