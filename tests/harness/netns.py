"""Network namespaces joined by a bridge, made and removed by a test: each one is a "host".

``Network(n)`` creates a bridge in the root namespace with an address in a private
benchmarking subnet (198.18.0.0/15, RFC 2544: never routed), and ``n`` namespaces, each with
its loopback up and one veth end on the bridge. ``prefix(i)`` is the command prefix that runs
a process in host ``i``; ``cut(i)``/``restore(i)`` take its link down and up (the host is cut
off). ``close()`` (also on ``with`` exit, so on a failed test) deletes the namespaces (which
deletes their veth pairs) and the bridge. Needs root and iproute2 (setup.sh installs it).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid


def available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


class Network:
    def __init__(self, hosts: int) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.subnet = f"198.18.{random.randrange(1, 255)}"
        self.bridge = f"embr{self.tag}"
        self.names = [f"emp{self.tag}h{i}" for i in range(hosts)]
        self.addrs = [f"{self.subnet}.{i + 2}" for i in range(hosts)]
        self.gateway = f"{self.subnet}.1"  # the bridge's own address, in the root namespace
        self.made: list[str] = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, addr) in enumerate(zip(self.names, self.addrs, strict=True)):
            _ip("netns", "add", ns)
            self.made.append(ns)
            outside, inside = f"emv{self.tag}{i}", f"emi{self.tag}{i}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    def cut(self, i: int) -> None:
        _ip("link", "set", f"emv{self.tag}{i}", "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", f"emv{self.tag}{i}", "up")

    def close(self) -> None:
        """Delete the veth pairs (from the root side: a namespace the kernel is slow to free would
        keep them otherwise), the namespaces and the bridge."""
        for name in reversed(self.made):
            if name == self.bridge:
                _ip("link", "del", name, check=False)
            else:
                _ip("link", "del", f"emv{self.tag}{self.names.index(name)}", check=False)
                _ip("netns", "del", name, check=False)
        self.made.clear()

    def leftovers(self) -> list[str]:
        listed = _ip("netns", "list", check=False).stdout + _ip("link", "show", check=False).stdout
        return [n for n in [*self.names, self.bridge, f"emv{self.tag}"] if n in listed]

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
