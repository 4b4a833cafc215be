"""Did-you-mean suggestions for misspelt keys, syscalls, groups and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, pool: Iterable[str], *, n: int = 3) -> str:
    """ "did you mean 'ptrace'?" for the closest entries of ``pool``, or "" when none is close."""
    candidates = list(pool)
    close = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    if not close:  # a case slip ("eperm", "af_unix") is still worth a hint
        by_case = {c.lower(): c for c in candidates}
        close = [by_case[w] for w in difflib.get_close_matches(word.lower(), by_case, n=n)]
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"
