"""``--config job.yaml``: any option of a command can come from a YAML mapping.

Keys are the option names in ``snake_case`` (``max_cloud``, ``mask_values``, ``aoi``);
``kebab-case`` (``max-cloud``) is accepted too. Options given on the command line win over
the file. Paths in the file resolve against the file's folder, so a job folder can move;
paths on the command line resolve against the working directory.
"""

from __future__ import annotations

import os
import shlex

import click
import yaml

from tfchips import storage
from tfchips.errors import ConfigError
from tfchips.manifest import publish_text

# Options whose value is a path, a URL or ``earthone:PRODUCT_ID``, besides those of type click.Path.
_SOURCE_OPTIONS = ("catalog",)
# Repeatable options whose entries are products, each with its own ``catalog``.
_PRODUCT_OPTIONS = ("merge", "stack")


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
    folder = os.path.dirname(path)
    defaults = {}
    for key, value in values.items():
        name = names.get(_normalised(key))
        if name is None or name == param.name:
            raise click.BadParameter(f"{path}: unknown option {key!r}")
        if name in defaults:
            raise click.BadParameter(f"{path}: option {key!r} is given twice (keys in snake_case and kebab-case name the same option)")
        value = _relative_to(folder, value, _path_kind(ctx.command, name))
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


def _path_kind(command: click.Command, name: str) -> str | None:
    """``"path"`` for an option holding a path, ``"products"`` for one of products, else None."""
    if name in _PRODUCT_OPTIONS:
        return "products"
    param = next(p for p in command.params if p.name == name)
    return "path" if name in _SOURCE_OPTIONS or isinstance(param.type, click.Path) else None


def _relative_to(folder: str, value: object, kind: str | None) -> object:
    """``value`` with its local relative paths joined to ``folder`` (the config file's)."""
    if kind == "path":
        return _joined(folder, value)
    if kind == "products":
        return [_product_relative_to(folder, item) for item in (value if isinstance(value, list) else [value])]
    return value


def _joined(folder: str, value: object) -> object:
    """A relative local path under ``folder``; URLs, ``earthone:...``, absolute paths and non-text as given."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # ``out: 2024`` is a folder name
    if not isinstance(value, str) or not value or storage.is_url(value) or value.startswith("earthone:"):
        return value
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(folder, value))


def _product_relative_to(folder: str, product: object) -> object:
    """A ``merge``/``stack`` entry (a mapping, or ``"catalog=... bands=..."`` text) with its catalog resolved."""
    if isinstance(product, dict):
        return {k: _joined(folder, v) if _normalised(k) == "catalog" else v for k, v in product.items()}
    if not isinstance(product, str):
        return product
    try:
        words = shlex.split(product)
    except ValueError:
        return product  # tfchips.imagery names the entry and the problem
    resolved = []
    for word in words:
        name, equals, text = word.partition("=")
        resolved.append(f"{name}={_joined(folder, text)}" if equals and _normalised(name) == "catalog" else word)
    return shlex.join(resolved)


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
    return shlex.join(
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
    help="YAML file of option values (keys in snake_case, e.g. max_cloud); paths in it are relative to"
    " its folder; command-line options win.",
)


def config_key(param: click.Parameter) -> str:
    """The documented config key of an option: its first long flag in snake_case (``--max-cloud`` -> ``max_cloud``)."""
    flags = [opt for opt in param.opts if opt.startswith("--")] or [param.name]
    return _normalised(flags[0])


def save_effective_config(out: str, values: dict, command: click.Command) -> str:
    """Write the options a job of ``command`` ran with to OUT/config.yaml, loadable with --config.

    Keys are the options' config keys; local paths are made absolute, since a config
    file's relative paths resolve against its own folder, OUT.
    """
    path = storage.join(out, "config.yaml")
    params = {p.name: p for p in command.params}
    cleaned = {
        config_key(params[name]): _relative_to(os.getcwd(), list(value) if isinstance(value, tuple) else value,
                                               _path_kind(command, name))
        for name, value in values.items()
        if value is not None
    }
    try:
        publish_text(path, yaml.safe_dump(cleaned, sort_keys=True))
    except OSError as error:
        raise ConfigError(f"{path}: cannot save the effective config ({error.strerror})") from None
    return path
