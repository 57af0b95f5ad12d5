"""Settings as dataclasses that check themselves and round-trip through JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, Self


class Settings:
    """Mixin for a dataclass of settings: :meth:`to_dict` gives them JSON-ready, :meth:`from_dict` reads
    them back, including files an earlier lees wrote under older names (``RENAMED``: old -> new).
    Each class checks its values in ``__post_init__``, so a config that exists is a valid one."""

    RENAMED: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The settings :meth:`to_dict` gave (or an earlier lees wrote); a ValueError for an unknown key."""
        renamed = {cls.RENAMED.get(key, key): value for key, value in data.items()}
        unknown = sorted(set(renamed) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)}")
        return cls(**renamed)
