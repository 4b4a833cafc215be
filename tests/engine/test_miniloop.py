"""The blocking path's small loop: readers, writers (both on one fd), timers."""

from __future__ import annotations

import os
import socket

from engine._miniloop import MiniLoop


def test_reader_and_writer_on_one_fd_are_dispatched_separately() -> None:
    loop = MiniLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    seen: list[str] = []
    done = {"v": False}

    def on_write() -> None:
        seen.append("w")
        a.send(b"ping")
        loop.remove_writer(a.fileno())

    def on_read() -> None:
        seen.append("r:" + a.recv(10).decode())
        loop.remove_reader(a.fileno())
        done["v"] = True

    loop.add_reader(a.fileno(), on_read)
    loop.add_writer(a.fileno(), on_write)
    loop.call_later(0.05, lambda: b.send(b.recv(10)))  # echo back after the write
    loop.call_later(5, lambda: done.update(v=True))
    loop.run_until(lambda: done["v"])
    assert seen == ["w", "r:ping"]
    assert loop._masks == {}, "nothing left registered"
    a.close()
    b.close()
    loop.close()


def test_remove_writer_keeps_the_reader() -> None:
    loop = MiniLoop()
    r, w = os.pipe()
    calls: list[str] = []
    loop.add_reader(r, lambda: (calls.append("read"), os.read(r, 1)))
    loop.add_writer(w, lambda: calls.append("write"))
    assert loop.remove_writer(w) is True
    assert loop.remove_writer(w) is False
    os.write(w, b"x")
    loop.call_later(0.2, lambda: calls.append("timer"))
    loop.run_until(lambda: "timer" in calls)
    assert calls[0] == "read" and "write" not in calls
    assert loop.remove_reader(r) is True
    os.close(r)
    os.close(w)
    loop.close()


def test_an_fd_number_can_be_registered_again_after_removal_and_close() -> None:
    loop = MiniLoop()
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    loop.add_writer(fd, lambda: None)
    loop.remove_reader(fd)
    loop.remove_writer(fd)
    a.close()
    c, d = socket.socketpair()
    got: list[bytes] = []
    loop.add_reader(c.fileno(), lambda: got.append(c.recv(10)))
    d.send(b"hi")
    loop.call_later(5, lambda: got.append(b"timeout"))
    loop.run_until(lambda: bool(got))
    assert got == [b"hi"]
    for s in (b, c, d):
        s.close()
    loop.close()
