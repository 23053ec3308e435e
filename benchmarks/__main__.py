"""Run every ``benchmarks/bench_*.py`` and print one JSON object per benchmark.

Each module defines ``run() -> Iterable[Result]``; ``python -m benchmarks grid``
runs only the modules whose name contains ``grid``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    selected = [n for n in names if not argv or any(a in n for a in argv)]
    failed = False
    for name in selected:
        for result in importlib.import_module(f"benchmarks.{name}").run():
            print(json.dumps(result.as_dict()), flush=True)
            failed |= result.met is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
