"""The ``watch`` workload: writers change a few keys while watchers open, close and resume watches.

Writers (the run's workers) put unique values, put two keys in one transaction (one revision,
two events: what atomicity is about), and now and then delete a key; each completion records
the revision the write got. A compactor compacts to a revision well behind the head every few
seconds, so resuming watchers sometimes find their revision compacted.

Watchers run beside them, each on a fixed scope (the whole prefix, the prefix with previous
values, one key). A watcher opens a Watch stream on a random member, from "now", from the
start of the run, or resuming right after the last revision it saw, reads for a random while,
asks for a progress notification now and then, and closes the stream; when the stream breaks
(a member killed or paused) it resumes the same way on another member. Every response is
recorded as it arrives, under the process ``watcher-N``, with the session it belongs to.

After the faults are healed, each member is watched once more from the start of the run (or
the compaction point) up to the head, and each member's final state of the keys is read.
Checked by ``chaos.checker.watch``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from chaos.checker import watch as watch_checker
from chaos.history import Operation
from chaos.workloads.base import FINAL_PROCESS, Channels, Client, Options, Workload, ok
from proto.etcdserverpb import rpc_pb2 as pb

PREFIX = "w/"
COMPACTOR_PROCESS = 2_000_000


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def event_json(ev: Any) -> list[Any]:
    kv = ev.kv
    prev = [ev.prev_kv.value.decode(), ev.prev_kv.mod_revision] if ev.HasField("prev_kv") else None
    kind = "put" if ev.type == 0 else "delete"
    return [kind, kv.key.decode(), kv.value.decode(), kv.mod_revision, kv.create_revision, kv.version, prev]


class Watch(Workload):
    name = "watch"
    needs = frozenset({"watch"})

    def __init__(self, options: Options, recorder: Any) -> None:
        super().__init__(options, recorder)
        self.prefix = f"{PREFIX}{options.run_id}/"
        self.keys = [f"{self.prefix}k{i}" for i in range(options.keys or 5)]
        self.watchers = int(options.extra.get("watchers", 3))
        self.compact_every = float(options.extra.get("compact_every", 6.0))
        self.next_value = 0
        self.first_rev = 0
        self.head = 0  # the highest revision a write completed at
        self.compacted = 0

    def _value(self) -> str:
        self.next_value += 1
        return str(self.next_value)

    # ---- writers ----

    async def setup(self, channels: Channels) -> None:
        resp = await channels.kv[0].Range(pb.RangeRequest(key=self.keys[0].encode()), timeout=10)
        self.first_rev = resp.header.revision + 1  # nothing under the prefix before this revision
        self.head = resp.header.revision

    async def operate(self, client: Client) -> None:
        roll = self.rng.random()
        if roll < 0.7:
            await self.put(client, self.rng.choice(self.keys))
        elif roll < 0.9:
            await self.put_two(client, self.rng.sample(self.keys, 2))
        else:
            await self.delete(client, self.rng.choice(self.keys))

    def _saw(self, revision: int) -> None:
        self.head = max(self.head, revision)

    async def put(self, client: Client, key: str) -> None:
        value = self._value()

        async def body() -> tuple[str, Any]:
            resp = await client.kv.Put(pb.PutRequest(key=key.encode(), value=value.encode()), timeout=client.timeout)
            self._saw(resp.header.revision)
            return ok({"puts": [[key, value]], "revision": resp.header.revision})

        await client.run("put", {"puts": [[key, value]]}, body)

    async def put_two(self, client: Client, keys: list[str]) -> None:
        puts = [[k, self._value()] for k in keys]
        request = pb.TxnRequest(
            success=[pb.RequestOp(request_put=pb.PutRequest(key=k.encode(), value=v.encode())) for k, v in puts]
        )

        async def body() -> tuple[str, Any]:
            resp = await client.kv.Txn(request, timeout=client.timeout)
            self._saw(resp.header.revision)
            return ok({"puts": puts, "revision": resp.header.revision})

        await client.run("put", {"puts": puts}, body)

    async def delete(self, client: Client, key: str) -> None:
        async def body() -> tuple[str, Any]:
            resp = await client.kv.DeleteRange(pb.DeleteRangeRequest(key=key.encode()), timeout=client.timeout)
            self._saw(resp.header.revision)
            return ok({"key": key, "deleted": resp.deleted, "revision": resp.header.revision})

        await client.run("delete", {"key": key}, body)

    # ---- watchers and the compactor ----

    def _scope(self, w: int) -> tuple[bytes, bytes, bool]:
        """(key, range_end, prev_kv) of watcher w."""
        prefix = self.prefix.encode()
        kind = w % 3
        if kind == 0:
            return prefix, prefix_end(prefix), False
        if kind == 1:
            return prefix, prefix_end(prefix), True
        return self.keys[w % len(self.keys)].encode(), b"", True

    async def background(self, channels: Channels, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._watcher(w, channels, stop)) for w in range(self.watchers)]
        if self.compact_every > 0:
            tasks.append(asyncio.create_task(self._compactor(channels, stop)))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _compactor(self, channels: Channels, stop: asyncio.Event) -> None:
        client = Client(COMPACTOR_PROCESS, 1, channels, self.recorder, self.options.op_timeout, member=0)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.compact_every)
                return
            target = self.head - 100
            if target <= max(self.compacted, self.first_rev):
                continue
            client.member = self.rng.randrange(len(channels.endpoints))
            client.kv, client.node = channels.kv[client.member], f"m{client.member + 1}"

            async def body(rev: int = target) -> tuple[str, Any]:
                await client.kv.Compact(pb.CompactionRequest(revision=rev), timeout=client.timeout)
                self.compacted = max(self.compacted, rev)
                return ok({"revision": rev})

            await client.run("compact", {"revision": target}, body)

    async def _watcher(self, w: int, channels: Channels, stop: asyncio.Event) -> None:
        key, end, prev_kv = self._scope(w)
        last = 0  # the last revision this watcher knows it has seen everything up to
        session = 0
        while not stop.is_set():
            session += 1
            member = self.rng.randrange(len(channels.endpoints))
            roll = self.rng.random()
            if last and roll < 0.8:
                start = last + 1  # resume
            elif roll < 0.9:
                start = self.first_rev
            else:
                start = 0  # from now
            duration = self.rng.uniform(0.5, 4.0)
            last = (
                await self.session(f"watcher-{w}", session, channels, member, key, end, prev_kv, start, duration, stop)
                or last
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.0, 0.3))

    async def session(
        self,
        process: str,
        session: int,
        channels: Channels,
        member: int,
        key: bytes,
        end: bytes,
        prev_kv: bool,
        start: int,
        duration: float,
        stop: asyncio.Event | None,
        until: int = 0,
    ) -> int:
        """One watch stream; records what it gets; returns the last revision it knows complete (0: none).

        With ``until``, reads until everything up to that revision has arrived (a final watch).
        """
        rec = self.recorder
        node = f"m{member + 1}"
        base = {"watcher": process, "session": session}

        def note(kind: str, **fields: Any) -> None:
            inv = rec.invoke(process, "watch", {**base, "kind": kind, **fields}, node=node)
            rec.ok(inv)

        note("open", key=key.decode(), range_end=end.decode(), start=start, prev_kv=prev_kv)
        create = pb.WatchCreateRequest(key=key, range_end=end, start_revision=start, prev_kv=prev_kv)
        call = channels.watch[member].Watch(wait_for_ready=bool(until))
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def reader() -> None:
            try:
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        await queue.put(None)
                        return
                    await queue.put(resp)
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                await queue.put(exc)

        task = asyncio.create_task(reader())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        complete = 0
        reason = "closed"
        try:
            await asyncio.wait_for(call.write(pb.WatchRequest(create_request=create)), self.options.op_timeout)
            next_progress = loop.time() + self.rng.uniform(0.2, duration)
            while True:
                now = loop.time()
                if (stop is not None and stop.is_set()) or now >= deadline:
                    break
                if until and now >= next_progress:
                    next_progress = now + 0.5
                    await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
                elif not until and now >= next_progress:
                    next_progress = deadline + 1
                    await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
                try:
                    item = await asyncio.wait_for(queue.get(), min(0.25, max(0.01, deadline - now)))
                except TimeoutError:
                    continue
                if item is None or isinstance(item, BaseException):
                    reason = "ended" if item is None else f"error: {_describe(item)}"
                    break
                events = [event_json(ev) for ev in item.events]
                progress = not events and not item.created and not item.canceled
                note(
                    "recv",
                    header=item.header.revision,
                    created=item.created,
                    canceled=item.canceled,
                    compact=item.compact_revision,
                    cancel_reason=item.cancel_reason,
                    progress=progress,
                    events=events,
                )
                if item.canceled:
                    reason = "canceled"
                    if item.compact_revision:
                        complete = item.compact_revision - 1  # resume at the compaction point
                    break
                if events:
                    complete = max(complete, events[-1][3])
                if progress:
                    complete = max(complete, item.header.revision)
                if until and complete >= until:
                    break
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            reason = f"error: {_describe(exc)}"
        finally:
            call.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
            note("close", reason=reason)
        return complete

    # ---- after the faults ----

    async def final(self, channels: Channels) -> None:
        """Through every member at once: read the keys, then watch the prefix from the start (or the
        compaction point) up to the newest revision any member read or reported, so the history the
        watches see covers every final state (a write whose client gave up may still commit late).
        A member that does not answer is left out (the checker sees it)."""
        prefix = self.prefix.encode()
        members = range(len(channels.endpoints))
        heads = await asyncio.gather(*(self._head(channels, m, prefix) for m in members), return_exceptions=True)
        read = await asyncio.gather(*(self._final_read(channels, m, prefix) for m in members))
        head = max((h for h in (*heads, *read) if isinstance(h, int)), default=self.head)
        await asyncio.gather(*(self._final_watch(channels, m, prefix, head) for m in members))

    async def _head(self, channels: Channels, m: int, prefix: bytes) -> int:
        request = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        resp = await channels.kv[m].Range(request, timeout=10, wait_for_ready=True)
        return resp.header.revision

    async def _final_read(self, channels: Channels, m: int, prefix: bytes) -> int | None:
        """Reads the member's final state; returns its revision (None if the read failed)."""
        client = Client(FINAL_PROCESS + m, 1_000, channels, self.recorder, self.options.op_timeout, member=m)
        end = prefix_end(prefix)
        revision: int | None = None

        async def body() -> tuple[str, Any]:
            nonlocal revision
            resp = await client.kv.Range(pb.RangeRequest(key=prefix, range_end=end), timeout=client.timeout)
            kvs = [
                [kv.key.decode(), kv.value.decode(), kv.mod_revision, kv.create_revision, kv.version] for kv in resp.kvs
            ]
            revision = resp.header.revision
            return ok({"kvs": kvs, "revision": revision})

        await client.run("final-read", {"prefix": self.prefix}, body, read_only=True)
        return revision

    async def _final_watch(self, channels: Channels, m: int, prefix: bytes, head: int) -> None:
        process = f"final-watcher-m{m + 1}"
        end = prefix_end(prefix)
        start = max(self.first_rev, self.compacted)
        for session in (1, 2, 3):
            complete = await self.session(
                process, session, channels, m, prefix, end, True, start, 30.0, None, until=head
            )
            if complete >= head or complete < start:  # there, or got nowhere
                return
            # canceled by a compaction (one whose answer the compactor never got, say): from the
            # compaction point; or cut short: from where it got to
            start = complete + 1

    def check(self, ops: list[Operation], budget_s: float) -> dict[str, Any]:
        return watch_checker.check(ops)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
