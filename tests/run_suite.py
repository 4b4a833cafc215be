"""Run the whole test suite; fail loudly when pytest collected nothing (exit 5)."""

from __future__ import annotations

import sys

import pytest


def main() -> int:
    code = pytest.main(["-q", *sys.argv[1:]])
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("run_suite: pytest collected no tests; that is a failure", file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
