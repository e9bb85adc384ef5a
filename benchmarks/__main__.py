"""`make bench`: every benchmark, each against its own private Redis, figures beside baselines."""

import importlib
import json
import platform
import sys
from datetime import UTC, datetime

BENCHMARKS = ["benchmarks.emit", "benchmarks.runs", "benchmarks.sse", "benchmarks.batches"]


def main() -> int:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"runcast benchmarks, {stamp}, {platform.node()} ({platform.machine()}, "
          f"Python {platform.python_version()})")
    results = {}
    for name in sys.argv[1:] or BENCHMARKS:
        print(f"\n== {name}")
        results[name] = importlib.import_module(name).main()
    print("\n" + json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
