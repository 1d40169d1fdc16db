"""Attacks that share one job each: the strategy tries them all, logs each outcome as a
``PROBE name: result`` line, and returns flat weights, so the job COMPLETES and each
attack is asserted on its own line (network, host files, credentials, /proc, writes,
privileges). A probe that got through prints ``OK ...``."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SECRET, Attack, Env

pytestmark = pytest.mark.sandbox

PROBE_LIB = '''
def probe(name, fn):
    try:
        res = "OK " + repr(fn())[:300]
    except BaseException as e:
        res = f"{type(e).__name__}: {e}"[:300]
    print(f"PROBE {name}: {res}", file=sys.stderr, flush=True)

def tcp(host, port):
    socket.create_connection((host, port), timeout=2).close()
    return "connected"

def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(path)
    return "connected"

def flat(bars):
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
'''


def host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # picks a route, sends nothing
        return str(s.getsockname()[0])


class HostListeners:
    """TCP, UDP and abstract-unix listeners on the host that record any contact."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("0.0.0.0", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract = "\0pitwall-redteam-" + uuid.uuid4().hex
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.abstract)
        self.unix.listen()
        self.contacts: list[str] = []
        self._stop = threading.Event()
        for sock in (self.tcp, self.udp, self.unix):
            sock.settimeout(0.2)
            threading.Thread(target=self._watch, args=(sock,), daemon=True).start()

    def _watch(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                if sock.type == socket.SOCK_DGRAM:
                    self.contacts.append(f"udp {sock.recvfrom(100)!r}")
                else:
                    self.contacts.append(f"accept {sock.accept()!r}")
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        for sock in (self.tcp, self.udp, self.unix):
            sock.close()


NETWORK = PROBE_LIB + '''
@pitwall.vectorized
def s(bars, tcp_port, udp_port, abstract, host_ip):
    probe("tcp_redis", lambda: tcp("127.0.0.1", 6379))
    probe("tcp_postgres", lambda: tcp("127.0.0.1", 5432))
    probe("tcp_host_listener", lambda: tcp("127.0.0.1", tcp_port))
    probe("tcp_host_ip", lambda: tcp(host_ip, tcp_port))
    probe("tcp_internet", lambda: tcp("1.1.1.1", 443))
    probe("docker_sock", lambda: unix("/var/run/docker.sock"))
    probe("abstract_unix", lambda: unix("\\0" + abstract))
    probe("dns", lambda: socket.getaddrinfo("example.com", 443))
    def udp(host, port):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"leak", (host, port))
        u.settimeout(1)
        return u.recvfrom(10)
    probe("udp_host", lambda: udp("127.0.0.1", udp_port))
    probe("udp_dns", lambda: udp("8.8.8.8", 53))
    probe("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    probe("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    probe("interfaces", lambda: sorted(n for _, n in socket.if_nameindex()))
    return flat(bars)
'''


@pytest.fixture(scope="module")
def listeners() -> Iterator[HostListeners]:
    hl = HostListeners()
    yield hl
    hl.close()


@pytest.fixture(scope="module")
def network(env: Env, listeners: HostListeners) -> Attack:
    return env.run(NETWORK, tcp_port=listeners.tcp.getsockname()[1],
                   udp_port=listeners.udp.getsockname()[1], abstract=listeners.abstract[1:],
                   host_ip=host_ip())


def test_network_job_completes_and_leaves_nothing(network: Attack,
                                                  listeners: HostListeners) -> None:
    assert network.view.status.value == "COMPLETED", network.reason
    assert network.leftovers == []
    assert listeners.contacts == []  # no packet of any kind reached the host


@pytest.mark.parametrize("name", ["tcp_redis", "tcp_postgres", "tcp_host_listener"])
def test_loopback_services_are_not_the_hosts(network: Attack, name: str) -> None:
    # The sandbox has its own empty loopback: the host's Redis/PostgreSQL are not there.
    assert network.probe(name).startswith("ConnectionRefusedError")


@pytest.mark.parametrize("name", ["tcp_host_ip", "tcp_internet", "udp_dns"])
def test_no_route_out(network: Attack, name: str) -> None:
    assert network.probe(name).startswith(("OSError: [Errno 101] Network is unreachable",
                                           "OSError: [Errno 113] No route to host"))


def test_docker_socket_is_absent(network: Attack) -> None:
    assert network.probe("docker_sock").startswith("FileNotFoundError")


def test_host_abstract_unix_socket_is_unreachable(network: Attack) -> None:
    assert network.probe("abstract_unix").startswith("ConnectionRefusedError")


def test_dns_does_not_resolve(network: Attack) -> None:
    assert network.probe("dns").startswith("gaierror")


def test_udp_to_the_host_goes_nowhere(network: Attack) -> None:
    assert network.probe("udp_host").startswith(("ConnectionRefusedError", "TimeoutError"))


@pytest.mark.parametrize("name", ["raw_socket", "packet_socket"])
def test_raw_and_packet_sockets_are_refused(network: Attack, name: str) -> None:
    assert network.probe(name).startswith(("PermissionError", "OSError: [Errno 97]"))


def test_only_loopback_exists(network: Attack) -> None:
    assert network.probe("interfaces") == "OK ['lo']"


HOST = PROBE_LIB + '''
@pitwall.vectorized
def s(bars, repo_file, lake_dir, jobs_dir, artifacts_dir):
    probe("etc_shadow", lambda: open("/etc/shadow").read())
    probe("root_home", lambda: os.listdir("/root"))
    probe("repo_file", lambda: open(repo_file).read())
    probe("lake", lambda: os.listdir(lake_dir))
    probe("other_jobs", lambda: os.listdir(jobs_dir))
    probe("artifacts", lambda: os.listdir(artifacts_dir))
    probe("job_root", lambda: sorted(os.listdir("/job")))
    probe("job_channel", lambda: sorted(os.listdir("/job/channel")))
    probe("job_input", lambda: sorted(os.listdir("/job/input")))
    probe("env", lambda: sorted(os.environ))
    probe("proc_pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    probe("proc_1_environ", lambda: open("/proc/1/environ", "rb").read())
    probe("sys", lambda: open("/sys/class/dmi/id/product_uuid").read())  # gVisor's own /sys
    probe("proc_kcore", lambda: open("/proc/kcore", "rb").read(16))
    for i, path in enumerate(["/escape", "/tmp/x", "/job/bundle/x.py", "/job/input/bars.arrow",
                              "/usr/lib/x", "/opt/pitwall/sdk/pitwall/engine/metrics.py",
                              "/opt/pitwall/site-packages/polars/__init__.py", "/etc/passwd"]):
        probe(f"write_{i}", lambda: open(path, "a").write("x"))
    probe("write_scratch", lambda: open("/scratch/ok", "w").write("fine"))
    import ctypes, ctypes.util
    libc = ctypes.CDLL(None, use_errno=True)
    def call(fn, *args):
        rc = fn(*args)
        return f"rc={rc} errno={os.strerror(ctypes.get_errno())}"
    probe("ptrace", lambda: call(libc.ptrace, 16, 1, None, None))  # PTRACE_ATTACH to pid 1
    probe("mount", lambda: call(libc.mount, b"tmpfs", b"/scratch", b"tmpfs", 0, None))
    probe("setuid", lambda: os.setuid(0))
    probe("chroot", lambda: os.chroot("/scratch"))
    probe("uid", lambda: (os.getuid(), os.geteuid()))
    return flat(bars)
'''


@pytest.fixture(scope="module")
def host(env: Env) -> Attack:
    cfg = env.attacks.config
    return env.run(HOST, repo_file=str(Path(__file__).resolve()), lake_dir=str(cfg.lake_dir),
                   jobs_dir=str(cfg.jobs_dir), artifacts_dir=str(cfg.artifacts_dir))


def test_host_job_completes_and_leaves_nothing(host: Attack) -> None:
    assert host.view.status.value == "COMPLETED", host.reason
    assert host.leftovers == []


@pytest.mark.parametrize("name", ["etc_shadow", "root_home", "repo_file", "sys"])
def test_host_files_are_not_there(host: Attack, name: str) -> None:
    assert host.probe(name).startswith("FileNotFoundError")


@pytest.mark.parametrize("name", ["lake", "other_jobs", "artifacts"])
def test_lake_other_jobs_and_artifacts_are_not_there(host: Attack, name: str) -> None:
    assert host.probe(name).startswith("FileNotFoundError")


def test_the_job_sees_only_its_bundle_and_its_slice(host: Attack) -> None:
    # channel: the image's empty mount point of an event job's lane dir (read-only here)
    assert host.probe("job_root") == "OK ['bundle', 'channel', 'input']"
    assert host.probe("job_channel") == "OK []"
    assert host.probe("job_input") == "OK ['bars.arrow', 'spec.json']"


def test_no_credentials_in_the_environment_or_proc(host: Attack) -> None:
    assert SECRET not in host.log
    env_keys = eval(host.probe("env").removeprefix("OK "))  # a repr of a sorted list
    assert set(env_keys) <= {"HOME", "LANG", "LD_LIBRARY_PATH", "PATH", "PYTHONDONTWRITEBYTECODE",
                             "PYTHONHASHSEED", "PYTHONPATH", "PYTHONPYCACHEPREFIX", "TMPDIR",
                             "TZ", "_RJEM_MALLOC_CONF"}  # the last set by polars at import
    assert "AWS" not in host.probe("proc_1_environ")


def test_proc_shows_only_the_sandbox(host: Attack) -> None:
    pids = eval(host.probe("proc_pids").removeprefix("OK "))
    assert pids and max(pids) < 50  # the host has hundreds; the sandbox has its own few
    assert not host.probe("proc_kcore").startswith("OK")


def test_writes_outside_scratch_fail(host: Attack) -> None:
    results = [host.probe(f"write_{i}") for i in range(8)]
    assert all(r.startswith(("OSError: [Errno 30]", "PermissionError", "FileNotFoundError"))
               for r in results), results
    assert host.probe("write_scratch") == "OK 4"


def test_ptrace_mount_setuid_chroot_are_refused(host: Attack) -> None:
    assert host.probe("ptrace").startswith("OK 'rc=-1 errno=Operation not permitted'")
    assert host.probe("mount").startswith("OK 'rc=-1 errno=Operation not permitted'")
    assert host.probe("setuid").startswith("PermissionError")
    assert host.probe("chroot").startswith("PermissionError")
    assert host.probe("uid") == "OK (65534, 65534)"
