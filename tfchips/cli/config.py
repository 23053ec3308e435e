"""``--config job.yaml``: any option of a command can come from a YAML mapping.

Keys are option names with or without leading dashes, ``-`` or ``_`` alike;
options given on the command line win over the file.
"""

from __future__ import annotations

import os

import click
import yaml

from tfchips.errors import ConfigError
from tfchips.manifest import publish_text


def _load(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            values = yaml.safe_load(stream) or {}
    except OSError as error:
        raise click.BadParameter(f"{path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise click.BadParameter(f"{path}: expected a mapping of option names to values")
    names = _option_names(ctx.command)
    defaults = {}
    for key, value in values.items():
        name = names.get(_normalised(key))
        if name is None or name == param.name:
            raise click.BadParameter(f"{path}: unknown option {key!r}")
        defaults[name] = _as_option_value(value, _is_multiple(ctx, name))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def _normalised(key: object) -> str:
    return str(key).lstrip("-").replace("-", "_")


def _option_names(command: click.Command) -> dict[str, str]:
    """Every spelling a config key may use (``aoi``, ``aoi-path``, ``max_cloud``) -> parameter name."""
    names = {}
    for param in command.params:
        names[param.name] = param.name
        for opt in param.opts:
            names[_normalised(opt)] = param.name
    return names


def _as_option_value(value: object, multiple: bool) -> object:
    """A YAML value as the option's command-line text.

    Lists stand for comma-separated values, or for repeats of a ``multiple`` option;
    a mapping for ``KEY=VALUE`` pairs (``classes: {0: background}``), and inside a
    repeated option for one ``name=value ...`` product (``merge: [{collection: x}]``).
    """
    if multiple:
        items = value if isinstance(value, list) else [value]
        return [_words(item) if isinstance(item, dict) else item for item in items]
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    return value


def _words(product: dict) -> str:
    return " ".join(
        f"{str(k).replace('_', '-')}={','.join(map(str, v)) if isinstance(v, list) else ('' if v is None else v)}"
        for k, v in product.items()
    )


def _is_multiple(ctx: click.Context, name: str) -> bool:
    return any(p.name == name and getattr(p, "multiple", False) for p in ctx.command.params)


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load,
    help="YAML file of option values; command-line options win.",
)


def save_effective_config(out: str, values: dict) -> str:
    """Write the options a job ran with to OUT/config.yaml, loadable with --config."""
    path = os.path.join(out, "config.yaml")
    cleaned = {k.replace("_", "-"): (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v is not None}
    try:
        publish_text(path, yaml.safe_dump(cleaned, sort_keys=True))
    except OSError as error:
        raise ConfigError(f"{path}: cannot save the effective config ({error.strerror})") from None
    return path
