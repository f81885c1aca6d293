"""The base of the resolved config's sections: frozen dataclasses read by attribute.

Each concept owns its section's type (`model.ModelParams`, `data.DataParams`, `gpu.DeviceSettings`,
`metrics.CustomMetric`, `config.TuningParams`, ...); code reads fields as attributes
(`tune.tuning.metrics`); two sections are equal when their fields are. `as_dict()` is a section's
JSON form (its fields, one level deep).

Written here because `dataclasses.asdict` copies recursively (it would rebuild every
`space.Parameter`, and with it the parameter's distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# Every section: fields are set once (frozen); lists and dicts inside are not copied, and are
# treated as read-only by convention (list-valued fields stay lists, so they equal the YAML's lists).
section = dataclasses.dataclass(frozen=True)


class Record:
    """The base of a frozen dataclass section: built from a mapping, written back as a dict."""

    def as_dict(self) -> dict:
        """{field name: value} in declaration order; values are the fields themselves, not copies."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_fields(cls, values: Mapping):
        """The section from a mapping holding (at least) its fields; other keys are ignored, and a
        missing field is None (a config the schema refused is still read as far as it goes)."""
        return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})
