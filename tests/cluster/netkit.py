"""Nodes on one machine: network namespaces joined to the host by veth pairs (issue 16).

Node ``i`` is the namespace ``pw-node<i>`` with the address ``10.231.<i>.2``; the host
end of its veth pair, ``pwh<i>``, has ``10.231.<i>.1``, and the harness's services (its
own PostgreSQL and Redis) listen on those host addresses and nowhere else the nodes can
reach. A node's processes run in its namespace (``nsenter --net``: unlike ``ip netns
exec``, it keeps the host's /sys, where runsc finds the cgroups) and in a UTS namespace of
their own, so each node has its own host name, as separate machines do (recovery judges a
worker of *another* host by its heartbeat only). Traffic goes only to addresses made here.

* partition: the host end of the node's veth goes down (both ways cut); heal: up again.
  While any node exists the host holds an ``unreachable`` route for the whole
  ``10.231.0.0/16`` (``fence``), so a packet for a cut node fails at once instead of
  leaving by the machine's default route;
* kill: SIGKILL of every process of the node; pause: SIGSTOP.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NET = "10.231"
#: Every node's network, for the database's pg_hba.
CIDR = f"{NET}.0.0/16"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Node:
    """One node: its namespace, addresses, data dir and the processes it runs."""

    index: int
    data_dir: Path
    name: str | None = None  # its host name; node<index> unless given
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"pw-node{self.index}"

    @property
    def host_if(self) -> str:
        return f"pwh{self.index}"

    @property
    def gateway(self) -> str:
        """The host's address on this node's link: where the node reaches the services."""
        return f"{NET}.{self.index}.1"

    @property
    def address(self) -> str:
        return f"{NET}.{self.index}.2"

    @property
    def hostname(self) -> str:
        return self.name or f"node{self.index}"

    def create(self) -> None:
        self.destroy()  # what a killed earlier run left
        fence()
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0",
            "netns", self.netns)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        self.kill()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.netns)

    def spawn(self, argv: list[str], env: dict[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Run ``argv`` on this node: in its network namespace, under its own host name."""
        wrapped = ["nsenter", f"--net=/var/run/netns/{self.netns}", "unshare", "--uts",
                   "sh", "-c", f'hostname {self.hostname} && exec "$@"', "sh", *argv]
        out = log.open("ab")
        proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def partition(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def signal(self, sig: signal.Signals) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL every process of the node (their sandboxes die with their supervisor)."""
        self.signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def fence() -> None:
    """Traffic to any node address that has no live link is refused on the host (the
    links' own /24 routes are more specific and win while they are up)."""
    _ip("route", "replace", "unreachable", CIDR)


def unfence() -> None:
    """Remove the fence once no node's namespace is left (another harness may still run)."""
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True,
                         timeout=30)
    if not any(line.startswith("pw-node") for line in out.stdout.splitlines()):
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("route", "del", "unreachable", CIDR)


def require_root_tools() -> None:
    """The harness needs root and iproute2/util-linux; say so instead of failing oddly."""
    if os.geteuid() != 0:
        pytest.fail("tests/cluster needs root (ip netns, veth pairs); CI runs as root")
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install iproute2 and util-linux")
