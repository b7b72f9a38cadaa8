"""The lean HTTP backend still tells a closed idle connection from a live one."""

from __future__ import annotations

import socket

from service.bland.streams import readable


def test_an_idle_socket_turns_readable_when_the_peer_closes() -> None:
    ours, peer = socket.socketpair()
    try:
        assert not readable(ours)
        peer.close()
        assert readable(ours)
    finally:
        ours.close()
    assert readable(ours)  # a closed socket counts as expired
