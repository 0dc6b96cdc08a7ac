"""One command-line convention for every `helm` subcommand: the parser, its flags, YAML typing and errors.

- `HelmParser` accepts every long flag as ``--a_b`` and ``--a-b`` (the seed's spellings and ours) and turns any
  parse error into one line, ``helm <command>: error: <flag>: <reason>``, with exit status 2.
- `add_dataclass` generates the flags of a settings dataclass: the field's type gives the conversion (``Literal``
  gives the choices, ``bool`` gives ``--x / --no-x``, ``list`` gives several values) and the docstring written
  under each field becomes its help text, as in litgpt's argument classes.
- `typed` converts one value (a command-line word or a YAML scalar) to a field's type: the command line and
  ``--config`` YAML share it, so ``lr: 1e-3`` is a float in both.
- `command_errors` ends a command on a user error with that same one line and exit 2.

Nothing heavy is imported here: `helm <command> --help` must answer at once.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import errno
import functools
import inspect
import os
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from helm.errors import ConfigError, user_message

EXIT_USAGE = 2  # every user error, as argparse's own
__all__ = ["ConfigError", "HelmParser", "add_dataclass", "command_errors", "fail", "from_values", "typed"]


def _spellings(flags: tuple[str, ...]) -> tuple[str, ...]:
    """``--a_b`` -> (``--a_b``, ``--a-b``) and the other way round; short flags and positionals unchanged."""
    out: list[str] = []
    for flag in flags:
        out.append(flag)
        if flag.startswith("--") and ("_" in flag or "-" in flag[2:]):
            body = flag[2:]
            for other in (body.replace("-", "_"), body.replace("_", "-")):
                if f"--{other}" not in out and f"--{other}" not in flags:
                    out.append(f"--{other}")
    return tuple(out)


class _BothSpellings:
    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action:
        return super().add_argument(*_spellings(flags), **kwargs)  # type: ignore[misc]


class _Group(_BothSpellings, argparse._ArgumentGroup):
    pass


class _Exclusive(_BothSpellings, argparse._MutuallyExclusiveGroup):
    pass


class _Switch(argparse.BooleanOptionalAction):
    """``--x`` / ``--no-x`` in both spellings: also ``--no_x`` (argparse itself adds only ``--no-`` prefixes)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        extra = [f"--no_{flag[2:].replace('-', '_')}" for flag in option_strings if flag.startswith("--")]
        self.option_strings += [flag for flag in dict.fromkeys(extra) if flag not in self.option_strings]

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if option_string in self.option_strings:
            setattr(namespace, self.dest, not option_string.startswith(("--no-", "--no_")))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown (not an empty one, nor for a required flag); one line per flag pair (``--a_b, --a-b VALUE``)
    instead of repeating the metavar."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, "", argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(action.option_strings) + " " + metavar


class HelmParser(_BothSpellings, argparse.ArgumentParser):
    """argparse with helm's convention: both flag spellings, defaults in the help, one-line errors (exit 2)."""

    def __init__(self, prog: str, description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(prog=prog, description=description, **kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> argparse._ArgumentGroup:
        group = _Group(self, *args, **kwargs)
        self._action_groups.append(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs: Any) -> argparse._MutuallyExclusiveGroup:
        group = _Exclusive(self, **kwargs)
        self._mutually_exclusive_groups.append(group)
        return group

    def error(self, message: str) -> typing.NoReturn:
        fail(self.prog, message)


def fail(prog: str, message: str) -> typing.NoReturn:
    """Print ``<prog>: error: <message>`` as one line and exit 2."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


# Errors a user can fix (a missing file, a bad value, an existing output): one line, exit 2. Other exception types
# keep their traceback. helm's own checks raise ValueError subclasses, and so can a library bug deep inside a
# command: HELM_DEBUG=1 re-raises any of them with its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    TimeoutError,
)
# OSErrors a user fixes on the machine (space, a read-only mount, a quota, permissions, locks on the filesystem)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM,
                            errno.ENOLCK})  # fmt: skip


@contextlib.contextmanager
def command_errors(prog: str) -> Iterator[None]:
    """``with command_errors("helm probe"): ...``: a user error ends the command with one line and exit 2."""
    try:
        yield
    except USER_ERRORS as e:
        if os.environ.get("HELM_DEBUG"):
            raise
        fail(prog, user_message(e))
    except OSError as e:  # the machine, not a bug: a full or read-only disk, a quota (the path and the cause)
        if e.errno not in STORAGE_ERRNOS or os.environ.get("HELM_DEBUG"):
            raise
        fail(prog, f"{e.filename or 'writing the output'}: {e.strerror or errno.errorcode[e.errno]}")


# ------------------------------------------------------------------------------- dataclass -> flags
@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (and of its bases): ``{field: text}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):  # fmt: skip
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a field holds: its scalar type, the allowed values, whether it is a list and whether None is allowed."""

    scalar: Any
    choices: tuple | None = None
    is_list: bool = False
    optional: bool = False


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def kind_of(cls: type, name: str) -> Kind:
    """`Kind` of field `name` from its annotation: ``float | None``, ``list[int]``, ``Literal["a", "b"]``,
    ``int | float`` (Lightning's limits: an int counts batches, a float is a share)."""
    hint = _hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else tuple(args)
    is_list = typing.get_origin(hint) is list
    if is_list:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return Kind(type(choices[0]), choices, is_list, optional)
    return Kind(hint, None, is_list, optional)


def _scalar(kind: Kind, value: Any) -> Any:
    """One scalar to `kind`: words from the command line, or what YAML read (YAML 1.1 reads ``1e-3`` as text)."""
    want = kind.scalar
    if want == (int, float):  # an int counts, a float is a share
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    raise ValueError(f"expected a number, got {value!r}") from None
        return value
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if want in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"expected {want.__name__}, got {value!r}")
        if isinstance(value, str):
            try:
                return want(value)
            except ValueError:
                raise ValueError(f"expected {want.__name__}, got {value!r}") from None
        if want is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected int, got {value!r}")
        if isinstance(value, (int, float)):
            return want(value)
        raise ValueError(f"expected {want.__name__}, got {value!r} ({type(value).__name__})")
    if want is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected text, got {value!r} ({type(value).__name__})")
        return str(value)
    return want(value)


def typed(cls: type, name: str, value: Any) -> Any:
    """`value` (a command-line word, a YAML scalar or list) as field `name` of `cls` holds it; ValueError says why."""
    kind = kind_of(cls, name)
    if value is None:
        if not kind.optional:
            raise ValueError("may not be null")
        return None
    if isinstance(value, (list, tuple)) != kind.is_list:
        raise ValueError(f"expects {'a list' if kind.is_list else 'one value'}, got {value!r}")
    items = [_choice(kind, _scalar(kind, v)) for v in (value if kind.is_list else [value])]
    return items if kind.is_list else items[0]


def _choice(kind: Kind, value: Any) -> Any:
    """`value` as one of the field's choices; text matches in any case (``BPE``, ``mamba2``)."""
    if kind.choices is None or value in kind.choices:
        return value
    if isinstance(value, str):
        for choice in kind.choices:
            if isinstance(choice, str) and choice.lower() == value.lower():
                return choice
    raise ValueError(f"invalid choice {value!r} (choose from {', '.join(map(str, kind.choices))})")


def _argparse_type(cls: type, name: str, kind: Kind) -> Any:
    def convert(text: str) -> Any:
        try:
            return _choice(kind, _scalar(kind, text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = "number" if kind.scalar == (int, float) else getattr(kind.scalar, "__name__", "value")
    return convert


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_dataclass(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str | None = None,
    skip: tuple[str, ...] = (),
    defaults: bool = True,
    aliases: dict[str, tuple[str, ...]] | None = None,
) -> argparse._ArgumentGroup:
    """Add one flag per field of dataclass `cls` (except `skip`) to a group titled `title` (default: the class's
    first docstring line). ``defaults=False`` leaves them unset (None) so a caller can layer YAML and presets.
    ``aliases``: more flags for a field (the project-wide names, e.g. ``{"output": ("--out",)}``)."""
    doc = (cls.__doc__ or "").strip().splitlines()
    group = parser.add_argument_group(title or (doc[0].rstrip(".") if doc else cls.__name__))
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        kind = kind_of(cls, f.name)
        kw: dict[str, Any] = {"dest": f.name, "help": docs.get(f.name, "").replace("%", "%%")}
        if defaults:
            kw["default"] = default_of(f)
        if kind.scalar is bool and not kind.is_list:
            # --x / --no-x; a flag that itself starts with "no" (--no-prefetcher) is a plain switch, since
            # BooleanOptionalAction reads any "--no-" prefix as the negation
            kw["action"] = "store_true" if f.name.startswith("no_") else _Switch
        else:
            kw["type"] = _argparse_type(cls, f.name, kind)
            kw["nargs"] = "+" if kind.is_list else None
            if kind.choices is not None:
                kw["choices"] = kind.choices
                kw["metavar"] = "{" + ",".join(map(str, kind.choices)) + "}"
        group.add_argument(f"--{f.name}", *(aliases or {}).get(f.name, ()), **kw)
    return group


def from_values(cls: type, values: dict[str, Any]) -> Any:
    """An instance of `cls` from the entries of `values` that are its fields (the others are left out)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in values.items() if k in names})
