"""A generated application package for the start-up benchmark: 150 modules, 60k lines.

Deterministic (one seed): the same tree on every run and machine. The code is what an
application's package looks like: module docstrings, `from __future__ import
annotations`, imports of standard-library modules and of modules earlier in the package,
module constants (a logger, a compiled regular expression), functions with loops,
comprehensions, try/except and f-strings, classes with methods and properties,
dataclasses and enums. Importing it runs no work beyond what such modules do at import
(decorators, class creation, `re.compile`).

Layout: `shop/__init__.py`, five subpackages (`util`, `storage`, `models`, `services`,
`api`, each with an `__init__.py` importing its modules in order) and 144 modules spread
over them. Each module defines `probe()`, returning a number fixed at generation; the
package's `checksum()` sums them over every module, so a run's output shows that every
module was imported and executed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GeneratedApp", "generate_app"]

PACKAGE = "shop"
SUBPACKAGES = ("util", "storage", "models", "services", "api")
WORDS = (
    "order user item price stock batch record event queue invoice cart account payment "
    "shipment coupon review report session token ledger vendor region channel"
).split()

# Standard-library imports the blocks need, by the name they use.
NEEDS = {
    "json": "import json",
    "re": "import re",
    "math": "import math",
    "os": "import os",
    "time": "import time",
    "logging": "import logging",
    "functools": "import functools",
    "itertools": "import itertools",
    "collections": "from collections import Counter, defaultdict",
    "dataclasses": "from dataclasses import dataclass, field",
    "enum": "from enum import Enum",
    "typing": "from typing import Any, Iterable, Iterator, Mapping, Optional",
    "datetime": "from datetime import datetime, timedelta, timezone",
    "pathlib": "from pathlib import Path",
    "hashlib": "import hashlib",
    "textwrap": "import textwrap",
    "contextlib": "import contextlib",
}
# Imported by some modules without being needed by their blocks (as real modules do).
EXTRAS = ("os", "time", "functools", "itertools", "typing", "collections", "contextlib")

# Blocks: (imports they need, template). Placeholders: {n} a unique suffix, {N} the same
# in CamelCase, {w} a word, {c} and {k} numbers.
BLOCKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("typing",),
        '''
def filter_{n}(items: Iterable[Optional[int]], threshold: int = {c}) -> list[int]:
    """Keep the {w} values above the threshold, scaled by their position."""
    result = []
    for index, item in enumerate(items):
        if item is None:
            continue
        value = item * {k} + index
        if value > threshold:
            result.append(value)
        elif value < -threshold:
            result.append(-value)
    return result
''',
    ),
    (
        ("collections", "typing"),
        '''
def summarize_{n}(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, float]]:
    """Count the {w} records by key and average their values.

    Records without the key are counted under "other"; values that are not numbers
    count as zero.
    """
    counts: Counter[str] = Counter()
    totals: defaultdict[str, float] = defaultdict(float)
    for record in records:
        key = str(record.get("{w}", "other"))
        counts[key] += 1
        try:
            totals[key] += float(record.get("value", 0))
        except (TypeError, ValueError):
            continue
    return {{key: (counts[key], totals[key] / counts[key]) for key in counts}}
''',
    ),
    (
        ("math",),
        '''
def render_{n}(name: str, values: list[float], *, width: int = {k}0) -> str:
    """A one-line text summary of the {w} values."""
    if not values:
        return f"{{name}}: (empty)"
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    text = f"{{name}}: n={{len(values)}} mean={{mean:.2f}} sd={{spread:.2f}}"
    return text[:width]
''',
    ),
    (
        ("json",),
        '''
def parse_{n}(text: str, default: int = {c}) -> dict:
    """Parse a JSON {w} payload, falling back to the default on bad input."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return {{"{w}": default, "ok": False}}
    if not isinstance(data, dict):
        data = {{"value": data}}
    data.setdefault("{w}", default)
    data["ok"] = True
    return data
''',
    ),
    (
        (),
        '''
class {N}Store:
    """A small bounded store of {w} entries, oldest dropped first."""

    def __init__(self, capacity: int = {c}) -> None:
        self.capacity = capacity
        self.entries: list[object] = []
        self.dropped = 0

    def add(self, entry: object) -> int:
        """Add an entry; return how many the store holds."""
        if len(self.entries) >= self.capacity:
            self.entries.pop(0)
            self.dropped += 1
        self.entries.append(entry)
        return len(self.entries)

    def find(self, predicate) -> list[object]:
        return [entry for entry in self.entries if predicate(entry)]

    @property
    def total(self) -> float:
        return sum(getattr(entry, "{w}", 0) for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"{N}Store({{len(self.entries)}}/{{self.capacity}}, dropped={{self.dropped}})"
''',
    ),
    (
        ("dataclasses",),
        '''
@dataclass
class {N}Line:
    """One {w} line: a quantity of a product at a unit price."""

    sku: str
    quantity: int = 1
    unit_price: float = 0.0
    tags: list[str] = field(default_factory=list)

    @property
    def amount(self) -> float:
        return round(self.quantity * self.unit_price, 2)

    def with_discount(self, percent: float) -> "{N}Line":
        price = self.unit_price * (100 - min(max(percent, 0), {k}0)) / 100
        return {N}Line(self.sku, self.quantity, price, list(self.tags))
''',
    ),
    (
        ("enum",),
        '''
class {N}State(Enum):
    """Where a {w} is in its life."""

    NEW = "new"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        return self in ({N}State.NEW, {N}State.ACTIVE)

    def next(self) -> "{N}State":
        order = list(type(self))
        return order[min(order.index(self) + 1, len(order) - 1)]
''',
    ),
    (
        ("itertools", "typing"),
        '''
def batches_{n}(items: Iterable[Any], size: int = {k}) -> Iterator[list[Any]]:
    """Yield the {w} items in lists of at most `size`."""
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def pairs_{n}(items: list[Any]) -> list[tuple[Any, Any]]:
    """Every pair of neighbouring items."""
    return list(zip(items, items[1:]))
''',
    ),
    (
        ("re",),
        '''
_{N}_PATTERN = re.compile(r"(?P<key>[a-z_]+)=(?P<value>[^;]*)(;|$){k}?")


def fields_{n}(text: str) -> dict[str, str]:
    """The key=value fields of a {w} header, keys lowercased."""
    found = {{}}
    for match in _{N}_PATTERN.finditer(text.lower()):
        key, value = match.group("key"), match.group("value").strip()
        if key and key not in found:
            found[key] = value
    return found
''',
    ),
    (
        ("pathlib", "os"),
        '''
def locate_{n}(base: str, name: str, *, suffixes: tuple[str, ...] = (".json", ".txt")) -> Path:
    """Where the {w} file `name` lives under `base`, the first suffix that exists."""
    root = Path(os.path.expanduser(base))
    for suffix in suffixes:
        candidate = root / f"{{name}}{{suffix}}"
        if candidate.exists():
            return candidate
    return root / f"{{name}}{{suffixes[0]}}"
''',
    ),
    (
        ("logging",),
        '''
def retry_{n}(action, attempts: int = {k}, *, log: bool = True):
    """Call `action` until it succeeds, at most `attempts` times; log each failure."""
    error = None
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (OSError, ValueError) as exc:
            error = exc
            if log:
                LOGGER.warning("{w}: attempt %d of %d failed: %s", attempt, attempts, exc)
    raise RuntimeError(f"{w} failed after {{attempts}} attempts") from error
''',
    ),
    (
        ("datetime",),
        '''
def window_{n}(start: datetime, days: int = {k}) -> tuple[datetime, datetime]:
    """The {w} reporting window: from the start of `start`'s day, `days` long, in UTC."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    begin = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return begin, begin + timedelta(days=days)
''',
    ),
    (
        ("hashlib",),
        '''
def fingerprint_{n}(*parts: object, length: int = {k}) -> str:
    """A short stable fingerprint of the {w} parts."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\\0")
    return digest.hexdigest()[: length * 2]
''',
    ),
    (
        ("functools",),
        '''
@functools.lru_cache(maxsize={c})
def cost_{n}(weight: int, distance: int) -> float:
    """The {w} shipping cost, cached: a base, per-kilogram and per-kilometre parts."""
    base = {k}.5
    if weight <= 0 or distance <= 0:
        return 0.0
    per_kg = 0.8 if weight < 20 else 0.6
    return round(base + weight * per_kg + distance * 0.05, 2)
''',
    ),
    (
        ("textwrap", "contextlib"),
        '''
def describe_{n}(title: str, body: str, *, width: int = 7{k}) -> str:
    """A {w} description wrapped to `width`, with its title underlined."""
    lines = [title, "=" * len(title)]
    with contextlib.suppress(ValueError):
        lines.extend(textwrap.wrap(body, width=width))
    return "\\n".join(lines)
''',
    ),
)


RARE = tuple(b for b in BLOCKS if b[0] in (("dataclasses",), ("enum",)))
RARE_SHARE = (0.3, 0.2)  # of the modules that have a dataclass, an enum
COMMON = tuple(b for b in BLOCKS if b not in RARE)


@dataclass(frozen=True)
class GeneratedApp:
    """What `generate_app` wrote."""

    root: Path
    modules: int  # module files, `__init__.py` included
    lines: int
    checksum: int  # what `shop.checksum()` returns


def generate_app(
    root: Path, modules: int = 150, lines: int = 60_000, seed: int = 9
) -> GeneratedApp:
    """Write the package (`root/shop/`), `root/main.py`, `root/nothing.py` and a
    `pyproject.toml` (the project marker); return what was written."""
    rng = random.Random(seed)
    plain = modules - 1 - len(SUBPACKAGES)  # the rest are __init__.py files
    names: dict[str, list[str]] = {sub: [] for sub in SUBPACKAGES}
    for i in range(plain):
        sub = SUBPACKAGES[i * len(SUBPACKAGES) // plain]
        names[sub].append(f"{rng.choice(WORDS)}_{i:03d}")
    written_lines, checksum = 0, 0
    per_module = (lines - 60 * (1 + len(SUBPACKAGES))) // plain
    earlier: list[tuple[str, str]] = []  # (subpackage, module) already generated
    for sub in SUBPACKAGES:
        for name in names[sub]:
            probe = rng.randint(1, 10_000)
            checksum += probe
            text = _module(rng, sub, name, probe, per_module, earlier)
            written_lines += _write(root / PACKAGE / sub / f"{name}.py", text)
            earlier.append((sub, name))
        probe = rng.randint(1, 10_000)
        checksum += probe
        written_lines += _write(
            root / PACKAGE / sub / "__init__.py", _subpackage(sub, names[sub], probe)
        )
    probe = rng.randint(1, 10_000)
    checksum += probe
    written_lines += _write(root / PACKAGE / "__init__.py", _package(probe))
    written_lines += _write(root / "main.py", MAIN)
    _write(root / "nothing.py", "")
    _write(root / "pyproject.toml", '[project]\nname = "shop"\nversion = "0"\n')
    return GeneratedApp(root, modules, written_lines, checksum)


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text.count("\n")


def _module(rng: random.Random, sub: str, name: str, probe: int, target: int, earlier: list) -> str:
    blocks: list[str] = []
    needs: set[str] = set(rng.sample(EXTRAS, rng.randint(1, 3)))
    count = 30  # header, imports, constants, probe
    # Dataclasses and enums cost far more at import than a function (a dataclass execs
    # the methods it writes): a few modules have one each, as in an application.
    rare = [b for b, p in zip(RARE, RARE_SHARE, strict=True) if rng.random() < p]
    while count < target:
        wants, template = rare.pop() if rare else rng.choice(COMMON)
        word = rng.choice(WORDS)
        suffix = f"{word}_{len(blocks)}"
        block = template.format(
            n=suffix,
            N=f"{word.title()}{len(blocks)}",
            w=word,
            c=rng.randint(2, 500),
            k=rng.randint(2, 9),
        )
        needs.update(wants)
        blocks.append(block)
        count += block.count("\n") + 1
    if "logging" not in needs and rng.random() < 0.5:
        needs.add("logging")
    imports = sorted({NEEDS[n] for n in needs}, key=lambda s: (s.startswith("from"), s))
    local = rng.sample(earlier, min(len(earlier), rng.randint(0, 2)))
    local_imports = [f"from {PACKAGE}.{s} import {m}" for s, m in sorted(local)]
    uses = "".join(f"\n    total += len({m}.__name__)" for _, m in sorted(local))
    noun = name.split("_")[0]
    header = [
        f'"""{name.replace("_", " ").title()}: the {sub} layer\'s helpers for {noun}s.',
        "",
        "Generated for the start-up benchmark: realistic code, deterministic, no side effects",
        "beyond what modules do at import (decorators, class creation, compiled patterns).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
        "",
        *local_imports,
        *([""] if local_imports else []),
        f'VERSION = "{rng.randint(1, 9)}.{rng.randint(0, 20)}"',
        f"LIMIT = {rng.randint(10, 1000)}",
    ]
    if "logging" in needs:
        header.append("LOGGER = logging.getLogger(__name__)")
    probe_fn = (
        f'\n\ndef probe() -> int:\n    """A number fixed at generation: the package\'s '
        f'checksum adds them up."""\n    total = {probe}{uses}\n'
        + "".join(f"    total -= len({m}.__name__)\n" for _, m in sorted(local))
        + "    return total\n"
    )
    return "\n".join(header) + "\n\n" + "\n".join(blocks) + probe_fn


def _subpackage(sub: str, modules: list[str], probe: int) -> str:
    imports = "".join(f"from . import {m}\n" for m in modules)
    listed = "".join(f"    {m},\n" for m in modules)
    return (
        f'"""The {sub} layer of the shop application."""\n\n{imports}\n'
        f"MODULES = [\n{listed}]\n\n\ndef probe() -> int:\n    return {probe}\n"
    )


def _package(probe: int) -> str:
    imports = "".join(f"from . import {s}\n" for s in SUBPACKAGES)
    listed = ", ".join(SUBPACKAGES)
    return f'''"""The shop application (generated for the start-up benchmark)."""

{imports}
LAYERS = [{listed}]


def probe() -> int:
    return {probe}


def checksum() -> tuple[int, int]:
    """(modules, the sum of every module's probe()): shows every module ran."""
    modules = [m for layer in LAYERS for m in layer.MODULES] + LAYERS
    return len(modules) + 1, sum(m.probe() for m in modules) + probe()
'''


MAIN = '''\
"""The shop application's entry point: import the package, check every module ran."""

import shop


def main() -> None:
    modules, total = shop.checksum()
    print(f"shop: {modules} modules, checksum {total}, loader {type(shop.__loader__).__name__}")


if __name__ == "__main__":
    main()
'''
