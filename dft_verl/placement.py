"""Where a Ray worker runs, as one log line: a multi-node run's log shows the node of every rank and replica; and the
variable naming the resource that places CPU ranks on nodes (``RANK_RESOURCE_ENV``).

    [dft_verl] placement: trainer rank 1/2 node 3f9c...e1 ip 10.0.0.7 host gpu-node-2

Ray forwards worker output to the driver (and a Ray job's log), so the line lands in the row's log; ``DEDUP_ENV`` in
the driver's environment keeps every rank's line. Two Ray nodes on one machine share the IP and host; the node id
tells them apart.
"""

from __future__ import annotations

import os
import re
import socket

PLACEMENT_TAG = "[dft_verl] placement:"
# CPU platform: the Ray resource that counts trainer ranks on a node (dft_verl.platform.cpu.rank_resource)
RANK_RESOURCE_ENV = "DFT_VERL_RAY_RANK_RESOURCE"
# Ray's driver folds lines that differ only in numbers and ids ("[repeated 3x across cluster]"), which would keep one
# rank's placement line of many: the driver's environment exempts them
DEDUP_ENV = {"RAY_DEDUP_LOGS_ALLOW_REGEX": re.escape(PLACEMENT_TAG)}
PLACEMENT_LINE = re.compile(re.escape(PLACEMENT_TAG) + r" (?P<role>.+?)(?: rank (?P<rank>\d+)/(?P<world>\d+))? "
                            r"node (?P<node>\S+) ip (?P<ip>\S+) host (?P<host>\S+)")


def placement_line(role: str) -> str:
    """This process's line: ``role``, its rank when verl set one (RANK/WORLD_SIZE), its Ray node id, IP and host."""
    import ray

    on_ray = ray.is_initialized()
    node = ray.get_runtime_context().get_node_id() if on_ray else "none"
    ip = ray.util.get_node_ip_address() if on_ray else "none"
    rank = f" rank {os.environ['RANK']}/{os.environ.get('WORLD_SIZE', '?')}" if "RANK" in os.environ else ""
    return f"{PLACEMENT_TAG} {role}{rank} node {node} ip {ip} host {socket.gethostname()}"


def placements(log: str) -> list[dict[str, str]]:
    """Every placement line of a log, parsed (role, rank, world, node, ip, host)."""
    return [m.groupdict() for m in PLACEMENT_LINE.finditer(log)]
