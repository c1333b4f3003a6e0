"""Scenario tests: scripts in tests/raft/testdata/*.txt replayed against a Network of RawNodes.

Each block is a command and, after `----`, the output it must print (see datadriven.py).
To accept new output after an intended behaviour change, run

    RAFT_REWRITE=1 .venv/bin/python -m pytest tests/raft/test_scenarios.py

and review the diff of testdata/ before committing it.

Commands (node ids are integers):
    add-nodes N [pre-vote=true|false] [check-quorum=true|false] [learners=4,5] [lease=true]
    campaign ID | tick ID N | tick-election ID | tick-heartbeat ID
    stabilize               deliver messages until quiet, printing role changes and messages
    propose ID DATA | propose-conf-change ID add|add-learner|remove=NODE
    read-index ID CTX | transfer-leadership from=ID to=ID | report-unreachable ID PEER
    isolate ID | cut A B | recover | restart ID | add-node ID (an empty, joining node)
    compact ID INDEX        snapshot the state machine at INDEX and drop the log up to it
    raft-log ID | raft-state | status ID | applied ID | read-states ID
"""

from __future__ import annotations

import os
import pathlib

import pytest

from raft.core import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDroppedError,
    StateRole,
)
from tests.raft import datadriven
from tests.raft.network import Network

TESTDATA = pathlib.Path(__file__).parent / "testdata"
REWRITE = os.environ.get("RAFT_REWRITE") == "1"

_CC_TYPES = {
    "add": ConfChangeType.ADD_NODE,
    "add-learner": ConfChangeType.ADD_LEARNER_NODE,
    "remove": ConfChangeType.REMOVE_NODE,
}


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} {cc.type.name} {cc.node_id}"
    return f"{e.term}/{e.index} {e.data.decode() if e.data else '(empty)'}"


def fmt_msg(m: Message) -> str:
    t = m.type
    s = f"{m.frm}->{m.to} {t.name} term={m.term}"
    if t == MessageType.APP:
        s += f" log={m.log_term}/{m.index} commit={m.commit}"
        if m.entries:
            s += " entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif t == MessageType.APP_RESP:
        s += f" index={m.index}"
        if m.reject:
            s += f" REJECT hint={m.log_term}/{m.reject_hint}"
    elif t in (MessageType.VOTE, MessageType.PRE_VOTE):
        s += f" log={m.log_term}/{m.index}"
        if m.context:
            s += f" ctx={m.context.decode()}"
    elif t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        s += " REJECT" if m.reject else " granted"
    elif t == MessageType.HEARTBEAT:
        s += f" commit={m.commit}"
        if m.context:
            s += f" ctx={m.context.decode()}"
    elif t == MessageType.HEARTBEAT_RESP:
        if m.context:
            s += f" ctx={m.context.decode()}"
    elif t == MessageType.SNAP and m.snapshot is not None:
        md = m.snapshot.metadata
        s += f" snapshot={md.term}/{md.index} voters={list(md.conf_state.voters)}"
    elif t in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESP):
        s += f" index={m.index} ctx={m.context.decode()}"
    elif t == MessageType.PROP:
        s += " entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    return s


class Env:
    def __init__(self) -> None:
        self.net: Network | None = None

    @property
    def n(self) -> Network:
        assert self.net is not None, "add-nodes first"
        return self.net

    def node(self, arg: str):
        return self.n.nodes[int(arg)]

    def handle(self, b: datadriven.Block) -> str:
        fn = getattr(self, "cmd_" + b.cmd.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unknown command {b.cmd}")
        return fn(b) or ""

    # -- setup --------------------------------------------------------------------------------

    def cmd_add_nodes(self, b: datadriven.Block) -> str:
        count = int(b.args[0])
        kw = b.kwargs
        learners = [int(x) for x in kw["learners"].split(",")] if "learners" in kw else []
        self.net = Network(
            range(1, count + 1),
            learners=learners,
            bootstrap=True,
            pre_vote=kw.get("pre-vote", "true") == "true",
            check_quorum=kw.get("check-quorum", "true") == "true",
            read_only_lease_based=kw.get("lease", "false") == "true",
        )
        self._roles = {i: (n.raft.role, n.raft.lead) for i, n in self.n.nodes.items()}
        return self.cmd_raft_state(b)

    def cmd_add_node(self, b: datadriven.Block) -> str:
        nid = int(b.args[0])
        self.n.add_node(nid, empty=True)
        self._roles[nid] = (StateRole.FOLLOWER, 0)
        return "ok"

    def cmd_restart(self, b: datadriven.Block) -> str:
        n = self.n.restart(int(b.args[0]))
        return f"restarted {n.id}: term={n.raft.term} vote={n.raft.vote} commit={n.raft.raft_log.committed}"

    # -- time and elections -----------------------------------------------------------------

    def cmd_campaign(self, b: datadriven.Block) -> str:
        self.node(b.args[0]).raw.campaign()
        return "ok"

    def cmd_tick(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        for _ in range(int(b.args[1])):
            node.raw.tick()
        return "ok"

    def cmd_tick_election(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        r = node.raft
        n = r.election_timeout if r.role == StateRole.LEADER else r.randomized_election_timeout
        for _ in range(n):
            node.raw.tick()
        return "ok"

    def cmd_tick_heartbeat(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        for _ in range(node.raft.heartbeat_timeout):
            node.raw.tick()
        return "ok"

    # -- the network ------------------------------------------------------------------------

    def _role_changes(self) -> list[str]:
        out = []
        for i, node in self.n.nodes.items():
            now = (node.raft.role, node.raft.lead)
            if self._roles.get(i) != now:
                self._roles[i] = now
                out.append(f"> {i} is {now[0].name} term={node.raft.term} lead={now[1]}")
        return out

    def cmd_stabilize(self, b: datadriven.Block) -> str:
        net = self.n
        out = self._role_changes()
        for _ in range(1000):
            msgs = net.collect()
            out += self._role_changes()
            if not msgs:
                break
            for m in msgs:
                kept = net._filter([m])
                out.append(fmt_msg(m) + ("" if kept else "  DROPPED"))
                net.deliver(kept)
            out += self._role_changes()
        return "\n".join(out)

    cmd_deliver_msgs = cmd_stabilize

    def cmd_isolate(self, b: datadriven.Block) -> str:
        self.n.isolate(int(b.args[0]))
        return "ok"

    def cmd_cut(self, b: datadriven.Block) -> str:
        self.n.cut(int(b.args[0]), int(b.args[1]))
        return "ok"

    def cmd_recover(self, b: datadriven.Block) -> str:
        self.n.recover()
        return "ok"

    # -- client operations ------------------------------------------------------------------

    def cmd_propose(self, b: datadriven.Block) -> str:
        try:
            self.node(b.args[0]).raw.propose(b.args[1].encode())
        except ProposalDroppedError as e:
            return f"dropped: {e}"
        return "ok"

    def cmd_propose_conf_change(self, b: datadriven.Block) -> str:
        ((kind, target),) = b.kwargs.items()
        try:
            self.node(b.args[0]).raw.propose_conf_change(ConfChange(_CC_TYPES[kind], int(target)))
        except ProposalDroppedError as e:
            return f"dropped: {e}"
        return "ok"

    def cmd_read_index(self, b: datadriven.Block) -> str:
        try:
            self.node(b.args[0]).raw.read_index(b.args[1].encode())
        except ProposalDroppedError as e:
            return f"dropped: {e}"
        return "ok"

    def cmd_transfer_leadership(self, b: datadriven.Block) -> str:
        self.node(b.kwargs["from"]).raw.transfer_leader(int(b.kwargs["to"]))
        return "ok"

    def cmd_report_unreachable(self, b: datadriven.Block) -> str:
        self.node(b.args[0]).raw.report_unreachable(int(b.args[1]))
        return "ok"

    def cmd_compact(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        idx = int(b.args[1])
        node.storage.create_snapshot(idx, node.raft.prs.conf_state(), b"state@%d" % idx)
        node.storage.compact(idx)
        return f"snapshot {node.storage.snapshot().metadata.term}/{idx}; log starts at {node.storage.first_index()}"

    # -- inspection -------------------------------------------------------------------------

    def cmd_raft_log(self, b: datadriven.Block) -> str:
        r = self.node(b.args[0]).raft
        ents = r.raft_log.all_entries()
        head = f"first={r.raft_log.first_index()} last={r.raft_log.last_index()} commit={r.raft_log.committed}"
        return "\n".join([head, *(fmt_entry(e) for e in ents)])

    def cmd_raft_state(self, b: datadriven.Block) -> str:
        out = []
        for i, node in sorted(self.n.nodes.items()):
            r = node.raft
            kind = "learner" if r.is_learner else ("voter" if r.promotable() else "none")
            out.append(f"{i}: {r.role.name} ({kind}) term={r.term} lead={r.lead} commit={r.raft_log.committed}")
        return "\n".join(out)

    def cmd_status(self, b: datadriven.Block) -> str:
        st = self.node(b.args[0]).raw.status()
        out = [
            f"{st.id}: {st.role.name} term={st.term} vote={st.vote} lead={st.lead} commit={st.commit} "
            f"applied={st.applied} voters={list(st.conf_state.voters)} learners={list(st.conf_state.learners)}"
        ]
        for pid, p in (st.progress or {}).items():
            out.append(
                f"  {pid}: {p.state} match={p.match} next={p.next}"
                + (" learner" if p.is_learner else "")
                + (" paused" if p.paused else "")
            )
        return "\n".join(out)

    def cmd_applied(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        out = [f"{i}/{t} {d.decode()}" for i, t, d in node.applied]
        if node.snapshots_applied:
            out.insert(0, f"snapshots installed at {node.snapshots_applied}")
        return "\n".join(out) or "(nothing)"

    def cmd_read_states(self, b: datadriven.Block) -> str:
        node = self.node(b.args[0])
        out = [f"index={rs.index} ctx={rs.request_ctx.decode()}" for rs in node.read_states]
        node.read_states.clear()
        return "\n".join(out) or "(none)"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path):
    env = Env()
    datadriven.run_file(path, env.handle, REWRITE)


def test_required_scenarios_exist():
    names = {p.stem for p in TESTDATA.glob("*.txt")}
    assert {"prevote", "checkquorum", "leader_transfer", "snapshot_catchup", "conflicting_follower"} <= names
