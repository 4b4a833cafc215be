"""flue-tui's own files: recent commands (XDG state dir) and user settings (XDG config dir).

- ``$XDG_STATE_HOME/flue/tui-recent.json``: the last commands launched, newest first;
- ``$XDG_CONFIG_HOME/flue/tui.toml``: ``[keymap]`` remaps keys by binding id, e.g.
  ``"monitor.allow" = "A"`` (see docs/tui.md for the ids).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from flue_tui.runspec import RunSpec

MAX_RECENT = 20


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base) / "flue"


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flue" / "tui.toml"


def _recent_file() -> Path:
    return state_dir() / "tui-recent.json"


def load_recent() -> list[RunSpec]:
    try:
        data = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for d in data if isinstance(data, list) else []:
        try:
            spec = RunSpec.from_json(d)
        except (TypeError, ValueError, AttributeError):
            continue
        if spec.argv:
            out.append(spec)
    return out[:MAX_RECENT]


def remember(spec: RunSpec) -> None:
    """Put ``spec`` first in the recent list (best effort: a read-only home is fine)."""
    items = [s for s in load_recent() if (s.argv, s.profile) != (spec.argv, spec.profile)]
    items.insert(0, spec)
    path = _recent_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps([s.to_json() for s in items[:MAX_RECENT]], indent=1),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def load_keymap() -> dict[str, str]:
    try:
        data: dict[str, Any] = tomllib.loads(config_file().read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    keymap = data.get("keymap", {})
    return {str(k): str(v) for k, v in keymap.items()} if isinstance(keymap, dict) else {}
