"""The Ray cluster a run submits its steps to (RAY_ADDRESS): the nodes alive when a step starts, and those of them
that died while it ran; and the Ray actors whose death a failed step's log reports (a rollout server or a trainer
rank killed, out of memory, ...). A failed step names what it lost instead of leaving a user to read Ray's logs.

Ray marks a node DEAD once its raylet misses health checks: about 15 s after the raylet ends with Ray's defaults
(measured 14 s on a loopback cluster), often after the job itself has failed (a surviving rank's collective fails
within seconds). ``lost_nodes`` therefore waits up to ``wait_s`` for that verdict, and only when a step has failed.
"""

from __future__ import annotations

import re
import time

NODE_DEATH_WAIT_S = 30.0  # how long a failed step waits for Ray to declare a node of its cluster dead
POLL_S = 1.0
# Ray's ActorDiedError, as a driver prints it: "class_name: X\n\tactor_id: ...\n\tpid: N\n\tname: ...\n\t...ip: ..."
ACTOR_DIED = re.compile(r"class_name: (?P<cls>\S+)\s+actor_id: (?P<id>\w+)\s+pid: (?P<pid>\d+)"
                        r"(?:\s+name: (?P<name>\S*))?(?:\s+namespace: \S*)?\s+ip: (?P<ip>\S+)")


def _nodes(address: str, state: str) -> dict[str, object]:
    from ray.util.state import list_nodes

    return {n.node_id: n for n in list_nodes(address=address, filters=[("state", "=", state)], detail=True,
                                            raise_on_missing_output=False)}


def alive_nodes(address: str) -> set[str]:
    """Ids of the cluster's nodes alive now; empty when the cluster cannot be asked (the step then reports none)."""
    try:
        return set(_nodes(address, "ALIVE"))
    except Exception:  # noqa: BLE001 - a cluster that does not answer fails the step itself, with its own message
        return set()


def describe(node) -> str:
    return (f"Ray node {node.node_id} (ip {node.node_ip}{', head' if node.is_head_node else ''}): "
            f"{node.state_message or 'dead'}")


def lost_nodes(address: str, before: set[str], wait_s: float = NODE_DEATH_WAIT_S) -> list[str]:
    """Descriptions of the nodes of ``before`` that Ray declares dead within ``wait_s`` seconds (as soon as one is)."""
    if not before:
        return []
    deadline = time.monotonic() + wait_s
    while True:
        try:
            dead = [n for node_id, n in _nodes(address, "DEAD").items() if node_id in before]
        except Exception:  # noqa: BLE001 - the head itself is gone: nothing more to learn from it
            return ["the Ray head at " + address + " does not answer (lost with its node?)"]
        if dead or time.monotonic() >= deadline:
            return [describe(n) for n in dead]
        time.sleep(POLL_S)


# what Ray puts before each line a worker prints, when the driver forwards it: "(Name pid=N[, ip=...])", colored
# on a terminal (ANSI codes); an error reported by a worker (verl's agent loop, say) arrives with one per line
RAY_LINE_PREFIX = re.compile(r"(?m)^(?:\x1b\[[0-9;]*m)?\([^()\n]*pid=\d+[^()\n]*\)(?:\x1b\[[0-9;]*m)? ?")


def died_actors(log: str) -> list[str]:
    """The Ray actors a log reports dead (Ray's ActorDiedError), once each, in the order of their first report,
    whether the driver or a worker (its lines prefixed by Ray) reported it."""
    seen, out = set(), []
    for m in ACTOR_DIED.finditer(RAY_LINE_PREFIX.sub("", log)):
        if m["id"] not in seen:
            seen.add(m["id"])
            name = f"{m['name']}, " if m["name"] else ""
            out.append(f"Ray actor {m['cls']} ({name}pid {m['pid']}, ip {m['ip']}) died")
    return out
