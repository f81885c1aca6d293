"""The base of the resolved config's sections: frozen dataclasses that also read as mappings.

Each concept owns its section's type (`model.ModelParams`, `data.DataParams`, `gpu.DeviceSettings`,
`metrics.CustomMetric`, `config.TuningParams`, ...); code reads fields as attributes
(`tune.tuning.metrics`). A section is also a read-only mapping over its fields, so `dict(section)`
is its JSON form and it compares equal to the plain dict with the same items (the resolved config
was a dict before it was typed, and its tests compare it to dicts).

Written here because dataclasses have no mapping view of their own, and `dataclasses.asdict`
copies (it would rebuild every `space.Parameter`, and with it the parameter's distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

# Every section: fields are set once (frozen); lists and dicts inside are not copied, and are
# treated as read-only by convention (list-valued fields stay lists, so they equal the YAML's lists).
section = dataclasses.dataclass(frozen=True, eq=False)


class Record(Mapping):
    """A read-only mapping over a frozen dataclass's fields, in declaration order."""

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    @classmethod
    def from_fields(cls, values: Mapping):
        """The section from a mapping holding (at least) its fields; other keys are ignored, and a
        missing field is None (a config the schema refused is still read as far as it goes)."""
        return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})
