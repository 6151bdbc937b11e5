"""Fault injection for tests: a TCP proxy in front of a real server that can cut or black-hole it."""
from __future__ import annotations

import select
import socket
import threading


class TcpProxy:
    """Listens on a free local port and forwards to `target`; `mode` decides what a connection meets.

    - "forward": bytes flow both ways (the real server answers);
    - "refuse": new connections are closed at once (the server is down);
    - "blackhole": connections are accepted and nothing ever comes back (a network partition).

    Changing the mode also cuts the connections already open, as a partition would.
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url_for(self, url_template: str) -> str:
        return url_template.format(port=self.port)

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "refuse", "blackhole")
        self.mode = mode
        with self._lock:
            for sock in self._open:
                try:
                    sock.close()
                except OSError:
                    pass
            self._open.clear()

    def close(self) -> None:
        self._stopped.set()
        self.set_mode("refuse")
        self.listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if self.mode == "refuse":
                client.close()
                continue
            with self._lock:
                self._open.append(client)
            if self.mode == "forward":
                threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.append(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in pair:
                try:
                    sock.close()
                except OSError:
                    pass
