"""A Flower Grid for tests that delivers each message by calling trainwell's ClientApp in this process.

The runtimes (Ray simulation, SuperLink + SuperNodes) are tested end to end elsewhere; this one lets the
round logic (resume, stale messages, silos that fail or time out) be tested in seconds, with faults
injected per (node, round).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

# Flower stamps its own task identity on every Message it creates; the runtimes set it, a test must.
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1

Fault = Callable[[int, Message], str | None]  # (node id, message) -> "timeout" | "error" | "crash" | None


class Crash(Exception):
    """Stands for the server dying in the middle of a round."""


class InProcessGrid(Grid):
    def __init__(self, silos: int, fault: Fault | None = None, first_node: int = 101):
        from trainwell.federated.client import app

        self.app = app
        self.nodes = {first_node + i: {"partition-id": i, "num-partitions": silos} for i in range(silos)}
        self.fault = fault or (lambda node, msg: None)
        self.delivered: list[tuple[int, str, int]] = []  # (node, message type, round)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def deliver(self, msg: Message, node: int | None = None) -> Message:
        node = msg.metadata.dst_node_id if node is None else node
        ctx = Context(run_id=1, node_id=node, node_config=self.nodes[node], state=RecordDict(), run_config={})
        try:
            return self.app(msg, ctx)
        except Exception as e:  # what the runtimes do with a ClientApp's exception
            return Message(error=Error(code=0, reason=f"{type(e).__name__}: {e}"), reply_to=msg)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            r = int(msg.content["config"]["server-round"])
            what = self.fault(node, msg)
            if what == "crash":
                raise Crash(f"server killed in round {r}")
            if what == "timeout":
                continue
            if what == "error":
                replies.append(Message(error=Error(code=0, reason="silo failed"), reply_to=msg))
                continue
            self.delivered.append((node, msg.metadata.message_type, r))
            replies.append(self.deliver(msg, node))
        return replies

    # the rest of the Grid interface is not used by Strategy.start
    @property
    def run(self) -> Any:
        raise NotImplementedError

    def set_run(self, run_id: int) -> None:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError
