"""Setting names checked against the schema, with a "did you mean" from its real keys.

OmegaConf.to_object copies a key the schema does not have onto the dataclass as a stray attribute, so
`+sweep.lr=[1e-3]` (a typo of sweep.lrs) would run the default grid without a word. `check_known_keys` refuses any
such key, whether it came from a `+` override or a YAML file; `explain_hydra_error` turns Hydra's own refusals of an
override (a misspelt key or config name, a grammar error) into one ConfigError that names the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from orchestrator.schema import Config, ConfigError

OVERRIDE_HELP = ("an override is key=value, e.g. 'sweep.lrs=[1e-4,1e-3]' or setting=animal_flag "
                 "(quote those with brackets: zsh reads [ ] itself)")


def did_you_mean(word: str, choices: typing.Iterable[str], prefix: str = "") -> str:
    """' (did you mean <prefix>X?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass a field's type holds (`X`, `X | None`), else None (dict, Any, a scalar: any key goes)."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def _list_item(tp: Any) -> type | None:
    """The dataclass a list field holds (`list[X]`), else None."""
    if typing.get_origin(tp) is list and typing.get_args(tp):
        return _dataclass_in(typing.get_args(tp)[0])
    return None


def _unknown(path: str, key: str, cls: type) -> ConfigError:
    known = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    parent = path.rpartition(".")[0]
    guess = did_you_mean(key, known, f"{parent}." if parent else "")
    return ConfigError(f"unknown config key {path}{guess}: {f'{parent} has' if parent else 'the config has'} "
                       f"{', '.join(known)}")


def unknown_path(path: str, cls: type = Config) -> ConfigError | None:
    """The error for a dotted key the schema does not have (`sweep.lr`), or None when it has it."""
    walked: list[str] = []
    for key in path.split("."):
        walked.append(key)
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if key not in names:
            return _unknown(".".join(walked), key, cls)
        inner = _dataclass_in(typing.get_type_hints(cls)[key])
        if inner is None:
            return None
        cls = inner
    return None


def check_known_keys(node: DictConfig, cls: type = Config, where: str = "") -> None:
    """Raise ConfigError naming the first key of a composed config that the schema does not have."""
    hints = typing.get_type_hints(cls)
    for key in node.keys():
        path = f"{where}{key}"
        if key not in hints:
            raise _unknown(path, str(key), cls)
        child = node._get_node(key)
        inner, item = _dataclass_in(hints[key]), _list_item(hints[key])
        if isinstance(child, DictConfig) and inner is not None and not child._is_none():
            check_known_keys(child, inner, f"{path}.")
        elif isinstance(child, ListConfig) and item is not None and not child._is_none():
            for i, element in enumerate(child):
                if isinstance(element, DictConfig):
                    check_known_keys(element, item, f"{path}[{i}].")


def explain_hydra_error(err: Exception, overrides: list[str]) -> ConfigError:
    """One ConfigError naming the fix for Hydra's refusal of the overrides (err is Hydra's or OmegaConf's)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    missing = getattr(err, "missing_cfg_file", None)
    if isinstance(err, MissingConfigException) and missing and "/" in missing:
        group, name = missing.rsplit("/", 1)
        options = list(err.options or [])
        return ConfigError(f"{group}={name}: there is no {group} named {name!r}{did_you_mean(name, options)}; "
                           f"the {group}s are {', '.join(options)} (conf/{group}/)")
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        problem = unknown_path(key) if key and not override.startswith(("-", "hydra")) else None
        if problem is not None:
            return problem
    cause = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if cause is not None and str(cause).strip() and str(cause).strip().splitlines()[0] not in text:
        text += f": {str(cause).strip().splitlines()[0]}"
    if isinstance(err, OverrideParseException):
        text = f"cannot read the overrides {overrides}: {text}; {OVERRIDE_HELP}"
    return ConfigError(text)


def check_composed(dcfg: DictConfig) -> None:
    """check_known_keys on a composed config, with Hydra's own `hydra` node left out."""
    if "hydra" in dcfg:
        dcfg = OmegaConf.masked_copy(dcfg, [k for k in dcfg.keys() if k != "hydra"])  # type: ignore[assignment]
    check_known_keys(dcfg)
