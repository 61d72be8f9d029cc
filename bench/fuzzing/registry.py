"""Every fuzz target: the TARGETS of bench/fuzzing/maps.py, indexes.py and landmarks.py (those present)."""

from __future__ import annotations

import importlib

from .target import FuzzTarget

TARGET_MODULES = ("maps", "indexes", "landmarks")


def available_modules() -> dict[str, list[FuzzTarget]]:
    """Module name -> its TARGETS, for the target modules that exist in this checkout."""
    found = {}
    for name in TARGET_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{name}":
                raise  # the module exists but something it imports does not: say so
            continue
        found[name] = list(module.TARGETS)
    return found


def all_targets() -> dict[str, FuzzTarget]:
    """Target name -> target, over every available module (names must be unique)."""
    targets: dict[str, FuzzTarget] = {}
    for module, module_targets in available_modules().items():
        for target in module_targets:
            if target.name in targets:
                raise ValueError(f"fuzz target {target.name!r} defined twice (again in {module})")
            targets[target.name] = target
    return targets


def select_targets(names: str | None) -> list[FuzzTarget]:
    """The targets named in a comma-separated list (a module name selects all of its targets), or all."""
    targets = all_targets()
    if not names:
        return list(targets.values())
    modules = available_modules()
    chosen: list[FuzzTarget] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in targets:
            chosen.append(targets[name])
        elif name in modules:
            chosen.extend(modules[name])
        else:
            raise ValueError(f"unknown fuzz target {name!r}; known: {', '.join(sorted(targets))} "
                             f"(or a module: {', '.join(modules)})")
    return list(dict.fromkeys(chosen))
