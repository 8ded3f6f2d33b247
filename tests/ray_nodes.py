"""Ray nodes on loopback for the tests: a head (`ray start --head --block`) and worker nodes (`ray start --address=...
--block`), each with its own ports, temp folder and a custom resource naming it, started as a user would start them
on two machines. Every process of a node is found by its temp folder (its command lines name it), so a node can be
stopped, or its raylet killed, without `ray stop` (which would end every Ray process on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)
RAY = os.path.join(VENV_BIN, "ray")
# Ray >= 2.5x turns token authentication on when ~/.ray/auth_token exists (left by any earlier local ray.init); its
# job agent then never accepted jobs here. The nodes listen on loopback only: no tokens.
AUTH = {"RAY_AUTH_MODE": "disabled"}
RANK_SLOT = "rank_slot"  # the custom resource counting trainer ranks per node (RAY_RANK_RESOURCE)


def free_ports(n: int, taken: set[int]) -> list[int]:
    """``n`` distinct free loopback ports, none in ``taken`` (which they join). Every socket stays bound until all
    ``n`` are chosen: a port freed and then handed out again would give two of a node's daemons one port."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            if (port := s.getsockname()[1]) not in taken:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    taken.update(ports)
    return ports


def processes_under(folder: str) -> list[int]:
    """Pids whose command line names ``folder`` (every daemon of a node started with --temp-dir=folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if folder.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def node_env() -> dict[str, str]:
    return dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                PYTHONPATH=str(Path(__file__).resolve().parents[1]), RAY_USAGE_STATS_ENABLED="0", **AUTH)


@dataclass
class Node:
    name: str  # also its custom resource: {"node_<name>": 1}
    proc: subprocess.Popen
    temp: str
    log: Path

    def raylet_pid(self) -> int:
        for pid in processes_under(self.temp):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                return pid
        raise RuntimeError(f"no raylet under {self.temp}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` ends the processes it started
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in processes_under(self.temp):  # any daemon that outlived it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass
class LoopbackCluster:
    """``head`` and ``workers`` on 127.0.0.1; ``address`` is the head's dashboard (RAY_ADDRESS of `ray job submit`)."""

    root: Path
    gcs_port: int = 0
    dashboard_port: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    ports_taken: set[int] = field(default_factory=set)  # every port handed to a node so far

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, rank_slots: int, args: list[str]) -> Node:
        # a short temp folder per node: Ray's unix sockets live under it (path length limit)
        temp = tempfile.mkdtemp(prefix=f"ray{name[:1]}", dir="/tmp")
        log = self.root / f"node_{name}.log"
        resources = json.dumps({f"node_{name}": 1, RANK_SLOT: rank_slots})
        flags = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen", "dashboard-agent-grpc",
                 "runtime-env-agent")
        ports = [f"--{flag}-port={port}" for flag, port in zip(flags, free_ports(len(flags), self.ports_taken))]
        # worker ports: 100 of its own per node, below the ephemeral range and clear of Ray's fixed defaults (10001)
        lo = 20000 + (os.getpid() % 55) * 200 + 100 * len(self.nodes)
        argv = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                f"--resources={resources}", *ports, f"--min-worker-port={lo}", f"--max-worker-port={lo + 99}", *args]
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, env=node_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc, temp, log)
        self.nodes[name] = node
        return node

    def start_head(self, num_cpus: int, rank_slots: int) -> Node:
        self.gcs_port, self.dashboard_port, client_port = free_ports(3, self.ports_taken)
        node = self._start("head", rank_slots, ["--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}",
                                    "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                                    "--include-dashboard=true", f"--ray-client-server-port={client_port}"])
        self.wait_for_jobs(node)
        return node

    def start_worker(self, name: str, num_cpus: int, rank_slots: int, timeout: float = 120) -> Node:
        node = self._start(name, rank_slots, [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={num_cpus}"])
        deadline = time.time() + timeout
        while not self.node_ids().get(name):
            assert node.proc.poll() is None, node.log.read_text()[-3000:]
            assert time.time() < deadline, node.log.read_text()[-3000:]
            time.sleep(2)
        return node

    def wait_for_jobs(self, head: Node, timeout: float = 180) -> None:
        """Jobs are accepted once the dashboard and the head's job agent are up."""
        deadline = time.time() + timeout
        while True:
            probe = subprocess.run([RAY, "job", "submit", f"--address={self.address}", "--", "true"],
                                   capture_output=True, text=True, env=node_env())
            if probe.returncode == 0:
                return
            assert head.proc.poll() is None, head.log.read_text()[-3000:]
            assert time.time() < deadline, probe.stderr[-2000:]
            time.sleep(3)

    def node_ids(self, state: str = "ALIVE") -> dict[str, str]:
        """{node name: Ray node id} of the nodes in ``state``, by their custom resource."""
        from ray.util.state import list_nodes

        out = {}
        for n in list_nodes(address=self.address, filters=[("state", "=", state)], raise_on_missing_output=False):
            for key in n.resources_total:
                if key.startswith("node_") and key[5:] in self.nodes:
                    out[key[5:]] = n.node_id
        return out

    def stop(self) -> None:
        for name in sorted(self.nodes, key=lambda n: n == "head"):  # workers first
            self.nodes[name].stop()
