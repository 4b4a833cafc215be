"""Helpers for the real-sandbox tests: the unprivileged runtime, cgroup delegation, ptys."""
