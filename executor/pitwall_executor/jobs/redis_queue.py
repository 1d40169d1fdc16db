"""The production job queue: Redis Streams with one consumer group (docs/architecture.md §4).

Two streams carry the jobs: ``<prefix>:queue:high`` (priority 0, interactive runs) and
``<prefix>:queue:low`` (priority > 0, sweep children). Every worker reads them through
the consumer group ``workers``; a delivered entry sits in the group's pending list under
the worker's name until ``ack`` removes it from both the pending list and the stream, so
neither grows with the number of jobs ever run.

Delivery is at-least-once. A worker that stops heartbeating leaves its entry idle in the
pending list; ``requeue_stale`` moves such entries, in one Lua script per stream, to a
fresh entry at the tail with ``deliveries + 1`` and removes the old one, so the recovery
itself can neither lose nor duplicate a job however many reapers race. The database stays
the source of truth: a redelivered job whose row is no longer PENDING is just acknowledged.

Redis may lose its data (a restart without persistence, ``FLUSHDB``): the streams and the
group vanish, a blocked read fails with ``UNBLOCKED`` and later commands with ``NOGROUP``.
The queue then recreates the group and calls its ``on_reset`` listeners, so the recovery
loop reconciles at once (every PENDING job of the database is enqueued again).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis

from pitwall_executor.jobs.queue import GONE, HELD, TAKEN, Claim, JobQueue, MemoryQueue

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "pitwall"
STREAM_KEY = "{prefix}:queue:{lane}"
EPOCH_KEY = "{prefix}:queue:epoch"  # new with every group Redis had lost: claims name theirs
GROUP = "workers"
REAPER = "pitwall-reaper"  # the consumer that owns an entry only inside the requeue script
HIGH = "high"  # priority <= 0
LOW = "low"  # priority > 0
LANES = (HIGH, LOW)
FIELD_JOB = "job_id"
FIELD_DELIVERIES = "deliveries"  # how many times the job was handed out before this entry
CONSUMER_TTL_S = 3600.0  # a consumer idle this long with nothing pending is forgotten
SOCKET_TIMEOUT_S = 15.0  # > the longest blocking claim; a hung server then fails, not hangs
CONNECT_TIMEOUT_S = 5.0
# The replies that say the stream or its group is gone (Redis lost its data).
_LOST = ("NOGROUP", "UNBLOCKED", "no such key")

# Re-add every entry idle for at least ARGV[3] ms with deliveries + 1, then XACK + XDEL it.
_REQUEUE_LUA = """
local moved, cursor = {}, '0-0'
repeat
  local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 100)
  cursor = res[1]
  for _, entry in ipairs(res[2]) do
    local id, fields, job, deliveries = entry[1], entry[2], nil, 0
    for i = 1, #fields, 2 do
      if fields[i] == 'job_id' then job = fields[i + 1]
      elseif fields[i] == 'deliveries' then deliveries = tonumber(fields[i + 1]) or 0 end
    end
    if job then
      redis.call('XADD', KEYS[1], '*', 'job_id', job, 'deliveries', deliveries + 1)
      moved[#moved + 1] = job
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
until cursor == '0-0'
return moved
"""

# Reset the idle time of ARGV[3] while consumer ARGV[2] owns it (1). -1: the streams
# are not those the claim was read from (the epoch KEYS[2] changed: Redis lost its data);
# 0: another consumer holds the entry, or requeue_stale moved it to a new one.
_HEARTBEAT_LUA = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[4] then return -1 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# Hand an entry this consumer read by accident back, unchanged, at the tail of its stream.
_RELEASE_LUA = """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 or redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

_Entry = tuple[str, str, dict[str, str]]  # (lane, entry id, fields)


class RedisQueue:
    """A :class:`~pitwall_executor.jobs.queue.JobQueue` on Redis Streams.

    ``client`` must speak RESP2 and decode responses to ``str`` (``from_url`` makes such
    a client), with no socket timeout shorter than the longest ``claim`` timeout.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c in prefix for c in " {}*?[]"):
            raise ValueError(f"queue prefix {prefix!r} must be non-empty, without spaces, "
                             "braces or glob characters")
        self.client = client
        self.prefix = prefix
        self.consumer_ttl_s = CONSUMER_TTL_S
        #: Called (without arguments) after the queue found its stream or group gone.
        self.on_reset: list[Callable[[], None]] = []
        self._requeue = client.register_script(_REQUEUE_LUA)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisQueue:
        """A queue on the Redis at ``redis://host:port/db`` (``rediss://`` for TLS)."""
        client = redis.Redis.from_url(url, decode_responses=True,
                                      socket_timeout=SOCKET_TIMEOUT_S,
                                      socket_connect_timeout=CONNECT_TIMEOUT_S)
        return cls(client, prefix=prefix)

    def key(self, lane: str) -> str:
        """The stream key of ``lane`` (``HIGH`` or ``LOW``)."""
        return STREAM_KEY.format(prefix=self.prefix, lane=lane)

    @property
    def epoch_key(self) -> str:
        return EPOCH_KEY.format(prefix=self.prefix)

    # -- the JobQueue protocol ---------------------------------------------------------

    def enqueue(self, job_id: str, *, priority: int = 0) -> None:
        lane = HIGH if priority <= 0 else LOW
        self.client.xadd(self.key(lane), {FIELD_JOB: job_id, FIELD_DELIVERIES: 0})

    def claim(self, worker: str, *, timeout: float) -> Claim | None:
        for lane in LANES:  # non-blocking, in priority order
            got = self._read(worker, (lane,), block_ms=None)
            if got:
                return self._to_claim(worker, got[0])
        if timeout <= 0:
            return None
        # Both streams were empty: wait on both. If both filled in the meantime Redis may
        # answer with one entry of each; keep the high one and give the other back.
        got = self._read(worker, LANES, block_ms=max(1, math.ceil(timeout * 1000)))
        if not got:
            return None
        got.sort(key=lambda e: LANES.index(e[0]))
        for lane, entry_id, _ in got[1:]:
            self._release(keys=[self.key(lane)], args=[GROUP, entry_id])
        return self._to_claim(worker, got[0])

    def heartbeat(self, claim: Claim) -> str:
        lane, entry_id, epoch, worker = _parse_token(claim.token)
        try:
            held = int(self._heartbeat(keys=[self.key(lane), self.epoch_key],
                                       args=[GROUP, worker, entry_id, epoch]))
        except redis.ResponseError as exc:
            if not _lost(exc):
                raise
            held = -1
        if held == 0:
            log.warning("job %s: the claim %s was already handed to another worker",
                        claim.job_id, claim.token)
        elif held == -1:
            log.info("job %s: the queue lost the claim %s with its data; the database's "
                     "attempt still decides who runs the job", claim.job_id, claim.token)
            self._reset()
        return {1: HELD, 0: TAKEN}.get(held, GONE)

    def ack(self, claim: Claim) -> None:
        lane, entry_id, _, _ = _parse_token(claim.token)
        key = self.key(lane)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(key, GROUP, entry_id)
            pipe.xdel(key, entry_id)
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                # Redis lost its data (restart) and the group is gone: nothing to ack.
                if not _lost(exc):
                    raise

    def release(self, claim: Claim) -> None:
        """Give a claim back unchanged, at the tail of its lane (e.g. its researcher is
        at quota): the same delivery count, so it does not look like a failure."""
        lane, entry_id, _, _ = _parse_token(claim.token)
        try:
            moved = int(self._release(keys=[self.key(lane)], args=[GROUP, entry_id]))
        except redis.ResponseError as exc:
            if not _lost(exc):
                raise
            moved = 0
        if not moved:  # the entry is gone (Redis lost it): a new one; a duplicate is harmless
            self.enqueue(claim.job_id, priority=0 if lane == HIGH else 1)

    def queued_ids(self) -> list[str]:
        """Every job with an entry in a stream: waiting, or delivered and not yet acked."""
        ids: list[str] = []
        for lane in LANES:
            last = "-"
            while True:
                page: Any = self.client.xrange(self.key(lane), min=last, count=1000)
                ids.extend(str(fields[FIELD_JOB]) for _, fields in page if FIELD_JOB in fields)
                if len(page) < 1000:
                    break
                last = f"({page[-1][0]}"
        return ids

    def publish(self, job_id: str, message: str) -> None:
        """Publish a job event on ``<prefix>:events:<job_id>`` (Redis pub/sub)."""
        self.client.publish(f"{self.prefix}:events:{job_id}", message)

    def requeue_stale(self, *, older_than: float) -> list[str]:
        min_idle_ms = max(0, math.floor(older_than * 1000))
        moved: list[str] = []
        for lane in LANES:
            key = self.key(lane)
            try:
                jobs = self._requeue(keys=[key], args=[GROUP, REAPER, min_idle_ms])
            except redis.ResponseError as exc:
                if not _lost(exc):
                    raise
                self._create_group(key)  # a fresh group has nothing pending
                self._reset()
                continue
            moved.extend(str(j) for j in jobs)
            self._forget_idle_consumers(key)
        return moved

    # -- internals ---------------------------------------------------------------------

    def _read(self, worker: str, lanes: tuple[str, ...], block_ms: int | None) -> list[_Entry]:
        streams: dict[Any, Any] = {self.key(lane): ">" for lane in lanes}
        reply: Any  # [[stream key, [(entry id, {field: value})]]] in RESP2
        try:
            reply = self.client.xreadgroup(GROUP, worker, streams, count=1, block=block_ms)
        except redis.ResponseError as exc:
            if not _lost(exc):
                raise
            for key in streams:
                self._create_group(key)
            self._reset()
            if "UNBLOCKED" in str(exc):
                return []  # a wait cut short: the caller claims again, from the fresh group
            reply = self.client.xreadgroup(GROUP, worker, streams, count=1, block=block_ms)
        lane_of = {self.key(lane): lane for lane in lanes}
        return [(lane_of[key], entry_id, fields)
                for key, entries in reply or [] for entry_id, fields in entries]

    def _to_claim(self, worker: str, entry: _Entry) -> Claim:
        lane, entry_id, fields = entry
        # Read after the entry: a loss in between gives the claim an epoch its heartbeat
        # will not find, which is the truth (its entry went with the data).
        raw: Any = self.client.get(self.epoch_key)
        epoch = str(raw or "")
        return Claim(job_id=fields[FIELD_JOB], token=f"{lane}:{entry_id}:{epoch}:{worker}",
                     deliveries=int(fields.get(FIELD_DELIVERIES, 0)) + 1)

    def _create_group(self, key: str) -> None:
        try:  # from id 0, so entries added before the group existed are delivered too
            self.client.xgroup_create(key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.client.set(self.epoch_key, uuid.uuid4().hex, nx=True)

    def _reset(self) -> None:
        for listener in self.on_reset:
            listener()

    def _forget_idle_consumers(self, key: str) -> None:
        """Drop long-idle consumers with nothing pending: worker names change per process."""
        try:
            consumers = self.client.xinfo_consumers(key, GROUP)
        except redis.ResponseError as exc:
            if not _lost(exc):
                raise
            return  # lost meanwhile: the next read or requeue recreates the group
        for consumer in consumers:
            idle_s = int(consumer["idle"]) / 1000
            if int(consumer["pending"]) == 0 and idle_s >= self.consumer_ttl_s:
                self.client.xgroup_delconsumer(key, GROUP, consumer["name"])


def _lost(exc: redis.ResponseError) -> bool:
    return any(marker in str(exc) for marker in _LOST)


def queue_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis could not be reached (down, restarting, loading its data)."""
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | ConnectionError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("LOADING"))


def _parse_token(token: str) -> tuple[str, str, str, str]:
    """(lane, entry id, epoch, worker) of a claim's token."""
    parts = token.split(":", 3)
    if len(parts) != 4 or parts[0] not in LANES:
        raise ValueError(f"claim token {token!r} was not made by a RedisQueue")
    return parts[0], parts[1], parts[2], parts[3]


def make_queue(url: str) -> JobQueue:
    """The queue ``queue_url`` names: ``memory://`` in-process, ``redis://`` production."""
    scheme = urlsplit(url).scheme
    if url == "memory://":
        return MemoryQueue()
    if scheme in ("redis", "rediss"):
        return RedisQueue.from_url(url)
    raise ValueError(f"queue_url {url!r} is not supported: use memory:// for the in-process "
                     "queue or redis://host:port/db (rediss:// for TLS) for Redis")

