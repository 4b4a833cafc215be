"""flue's sandbox engine: namespaces, a tmpfs root, seccomp-bpf and cgroups, from a profile."""

__version__ = "0.1.0"
