"""Errors a user can fix. Kept free of imports: the model modules use them, and `helm export` ships those modules
(with what they import) inside a Hugging Face folder."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A settings value that fails its check; `field` names it so a command can say ``--<field> <value>``."""

    def __init__(self, field: str, value: Any, why: str, owner: str = "") -> None:
        self.field, self.value, self.why = field, value, why
        super().__init__(f"{owner + '.' if owner else ''}{field}={value!r}: {why}")

    def as_flag(self) -> str:
        shown = "" if self.value is True else f" {_show(self.value)}"  # a switch is named, not valued
        return f"--{self.field}{shown}: {self.why}"


def user_message(error: Exception) -> str:
    """A user error as the one line a command prints: a `ConfigError` names its flag, anything else says itself."""
    return error.as_flag() if isinstance(error, ConfigError) else str(error)


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
