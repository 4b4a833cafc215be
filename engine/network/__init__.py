"""Network policy beyond an empty namespace: the ``allowlist`` mode.

- ``policy``: allow rules, matching, the resolver map, the addresses and variables the
  sandbox sees (pure);
- ``dns``: the DNS wire format, as much as the stub needs (pure);
- ``inside``: the listening sockets PID 1 creates in the sandbox's namespace;
- ``service``: the supervisor's proxy, DNS stub and captured connections, on the loop;
- ``resolver``: the resolver map, else ``getaddrinfo`` in threads.

See docs/network.md.
"""
