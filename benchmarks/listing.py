"""The text of `headbench list`: one function per section."""

from __future__ import annotations

import strategies
from benchmarks import backbones, config, datasets
from strategies.base import config_fields, type_name


def _options(options: dict[str, config.Option], indent: str = "    ") -> list[str]:
    lines = []
    for key, option in options.items():
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        accepted = " | ".join(repr(c) for c in option.choices) or " or ".join(
            k.__name__ for k in kinds
        )
        lines.append(f"{indent}{key} = {option.default!r}  ({accepted}) {option.meaning}")
    return lines


def strategies_() -> str:
    lines = ["strategies (configure with [strategies.NAME] or --set strategies.NAME.KEY=VALUE):"]
    for name in strategies.list_strategies():
        cls = strategies.get_strategy(name)
        aliases = strategies.aliases_of(name)
        alias_text = f" (alias: {', '.join(aliases)})" if aliases else ""
        lines.append(f"  {name}{alias_text}: {cls.paper}")
        for key, annotation, default, meaning in config_fields(cls.Config):
            lines.append(f"    {key} = {default!r}  ({type_name(annotation)}) {meaning}")
    return "\n".join(lines)


def _specs(title: str, specs) -> str:
    lines = [title]
    for spec in specs:
        lines.append(f"  {spec.name}: {spec.description}")
        lines.extend(_options(spec.options))
    return "\n".join(lines)


def datasets_() -> str:
    return _specs("datasets ([dataset] name = ...):", datasets.DATASETS.values())


def backbones_() -> str:
    return _specs("backbones ([backbone] name = ...):", backbones.BACKBONES.values())


def configs_() -> str:
    lines = [f"configs (in {config.CONFIG_DIR}; run by path or by name):"]
    for path in config.shipped_configs():
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        lines.append(f"  {path.stem}: {first.lstrip('# ').strip()}")
    return "\n".join(lines)


SECTIONS = {
    "strategies": strategies_,
    "datasets": datasets_,
    "backbones": backbones_,
    "configs": configs_,
}
