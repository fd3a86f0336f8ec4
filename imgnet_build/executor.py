"""Where per-item work runs: threads in this process (`local`, the default) or a Dask cluster.

    executor = open_executor("dask-local:4")    # or "local", or "dask://scheduler:8786"
    with executor:
        summary = fetch_pending(workspace, settings, executor=executor)

Settings: `executor` in `imgnet.toml`, `IMGNET_EXECUTOR`, or `--executor` (flag > environment
> file > default). `dask-local:N` starts a `LocalCluster` of N worker processes (one thread
each) for the run; `dask://HOST:PORT` uses a running cluster whose workers have
imgnet-build installed and can reach the blob store (S3, or the same folder path on a
shared file system) and the URLs. Workers never touch the database.

Design (measured in `benchmarks/bench_gather_executors.py`; see the README's "Running at
scale"): one coordinator, the process that runs the command, claims rows under its
leases, hands the workers shards of a few hundred items, and commits the small result
records they return in batches. Workers fetch, validate, hash and write blobs straight
to the shared store. Workers committing themselves through the leases was the
alternative; it puts every worker on the database (a connection each, PostgreSQL only,
since SQLite cannot be shared across machines) for no gain: a result costs the
coordinator 0.1-0.8 ms of database work, batched, in a thread of its own, against
1-3 ms of work per item on a worker.

- Exactly once: a shard is a Dask task; when its worker dies, Dask runs it again on
  another worker (up to `distributed.scheduler.allowed-failures` times). Only the
  coordinator writes rows, each once, under its claim, when the shard's result comes
  back; a blob written twice has the same content address and the same bytes.
- Politeness across the cluster: the coordinator owns each host's budget (`per_host`
  requests in flight, `host_rate` requests/s) and grants every shard a share of it
  (k slots and k/per_host of the rate for each host in the shard). Shares in flight
  never add up to more than the budget, so the limits hold for the whole cluster, not per
  worker. A Retry-After seen by a worker pauses the host at the coordinator too. Hosts
  reached only through a redirect get one slot and 1/per_host of the rate per shard.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import queue
import re
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from imgnet_build.blobs import BlobStore, open_blob_store
from imgnet_build.claims import Item
from imgnet_build.errors import BadInput
from imgnet_build.fetch_item import Outcome, Tools, fetch_item
from imgnet_build.netguard import HostLimiter
from imgnet_build.validate import DecodeBudget

if TYPE_CHECKING:
    from imgnet_build.fetch import FetchSettings

__all__ = ["Executor", "LocalExecutor", "DaskExecutor", "open_executor", "parse_executor",
           "run_shard", "Shard", "ShardResult"]

DEFAULT_EXECUTOR = "local"
_DASK_LOCAL = re.compile(r"dask-local:(\d+)")
_DASK_ADDRESS = re.compile(r"dask://([^/\s:]+):(\d+)")
SHARD_ITEMS = 4  # items per shard, per download thread of the worker
BLOB_SHARD = 50  # blobs per task of `on_blobs`


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    kind: str  # local | dask-local | dask
    workers: int = 0  # dask-local: worker processes
    address: str = ""  # dask: tcp://HOST:PORT


def parse_executor(value: str) -> ExecutorSpec:
    """`local`, `dask-local:N` or `dask://HOST:PORT`; BadInput for anything else."""
    text = value.strip()
    if text == "local":
        return ExecutorSpec("local")
    if match := _DASK_LOCAL.fullmatch(text):
        if not 1 <= int(match[1]) <= 512:
            raise BadInput(f"executor {value!r}: dask-local needs 1 to 512 worker processes")
        return ExecutorSpec("dask-local", workers=int(match[1]))
    if match := _DASK_ADDRESS.fullmatch(text):
        return ExecutorSpec("dask", address=f"tcp://{match[1]}:{match[2]}")
    raise BadInput(f"unknown executor {value!r}; use local, dask-local:N (N worker processes here) "
                   "or dask://HOST:PORT (a running Dask scheduler)")


class Batch:
    """One run's items in flight on an executor: `submit` items, collect `completed` (item, outcome) pairs."""

    capacity: int  # items worth keeping submitted at once

    def submit(self, item: Item) -> None: ...
    def in_flight(self) -> int:
        raise NotImplementedError

    def completed(self, timeout: float | None = None) -> list[tuple[Item, Outcome]]:
        """Finished items: at least one, waiting up to `timeout` seconds (None: as long as it takes);
        [] when nothing is in flight or the time ran out."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Give up what is in flight, now (Ctrl-C, a broken blob store)."""
        ...
    def close(self) -> None: ...


class Executor:
    """Runs per-item work. `fetch(settings, blobs)` opens a `Batch` for one fetch run."""

    name = "local"

    def fetch(self, settings: FetchSettings, blobs: BlobStore) -> Batch:
        raise NotImplementedError

    def map(self, function: Callable[[Any], Any], chunks: list[Any]) -> Iterator[Any]:
        """`function(chunk)` for every chunk, results in order (for CPU work such as perceptual hashes)."""
        raise NotImplementedError

    def on_blobs(self, function: Callable[[BlobStore, str], Any], blobs: BlobStore, keys: list[str]) -> list[Any]:
        """`function(store, key)` for every key, in order: here in threads, or in shards on the workers, which
        open the same blob store themselves (dedup's perceptual hashes). `function` must be importable."""
        location, endpoint = _where(blobs, self)
        chunks = [keys[start:start + BLOB_SHARD] for start in range(0, len(keys), BLOB_SHARD)]
        return [result for part in self.map(functools.partial(_on_blobs, function, location, endpoint), chunks)
                for result in part]

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- local: threads in this process ---------------------------------------------------------

class LocalExecutor(Executor):
    """Threads in this process: one shared downloader, so politeness is per process (the whole run)."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or os.cpu_count() or 1

    def fetch(self, settings: FetchSettings, blobs: BlobStore) -> Batch:
        return _LocalBatch(settings, blobs)

    def map(self, function: Callable[[Any], Any], chunks: list[Any]) -> Iterator[Any]:
        with concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="imgnet-map") as pool:
            yield from pool.map(function, chunks)


class _LocalBatch(Batch):
    """Download threads that take items from one queue and put (item, outcome) on another.

    No `Future` per item: waiting on a set of futures (`concurrent.futures.wait`) takes every future's lock
    on each call, and with a hundred items in flight that made the thread that schedules and records
    results the busiest in the process. Threads start as items arrive, up to `settings.workers`."""

    def __init__(self, settings: FetchSettings, blobs: BlobStore) -> None:
        self.tools = Tools(settings, blobs)
        self.capacity = settings.workers * 4  # running, and queued for when a thread frees up
        self.workers = settings.workers
        self.todo: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[Item, Outcome | BaseException]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.count = 0  # submitted and not yet returned by `completed`
        self.abandoned = False

    def _work(self) -> None:
        while (item := self.todo.get()) is not None:
            if self.abandoned:
                continue  # given up: nobody collects it
            try:
                outcome: Outcome | BaseException = fetch_item(item, self.tools)
            except BaseException as exc:  # BlobStoreFailed: raised by `completed` in the run's thread
                outcome = exc
            self.done.put((item, outcome))

    def submit(self, item: Item) -> None:
        self.count += 1
        if len(self.threads) < min(self.workers, self.count):
            thread = threading.Thread(target=self._work, name=f"imgnet-fetch_{len(self.threads)}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.todo.put(item)

    def in_flight(self) -> int:
        return self.count

    def completed(self, timeout: float | None = None) -> list[tuple[Item, Outcome]]:
        if not self.count:
            return []
        try:
            finished = [self.done.get(timeout=timeout)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:  # whatever else has finished meanwhile, without waiting
                finished.append(self.done.get_nowait())
        self.count -= len(finished)
        results: list[tuple[Item, Outcome]] = []
        for item, outcome in finished:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append((item, outcome))
        return results

    def abandon(self) -> None:
        self.abandoned = True
        self.tools.abandon()

    def close(self) -> None:
        """Let the threads finish the item in hand (at once, after `abandon`) and end."""
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()
        self.threads = []


# -- Dask ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Shard:
    """What a Dask worker gets: items, the settings, where blobs go, and its share of each host."""

    settings: FetchSettings
    blobs: str  # blob store location (a folder every worker sees, or s3://bucket/prefix)
    s3_endpoint_url: str | None
    items: tuple[Item, ...]
    shares: dict[str, tuple[int, float]]  # host -> (requests in flight, requests per second)


@dataclasses.dataclass(frozen=True)
class ShardResult:
    outcomes: tuple[Outcome, ...]  # in the order of the shard's items
    paused: dict[str, float]  # host -> seconds it asked us to wait (Retry-After)
    worker: int  # the process id that did it


_worker_state: dict[Any, Any] = {}
_worker_lock = threading.Lock()


def _worker_resources(shard: Shard) -> tuple[BlobStore, concurrent.futures.ThreadPoolExecutor, DecodeBudget]:
    """This worker process's blob store, download threads and decode budget, made once and kept."""
    settings = shard.settings
    key = (shard.blobs, shard.s3_endpoint_url, settings.workers, settings.decode_memory)
    blobs = _worker_blobs(shard.blobs, shard.s3_endpoint_url)
    with _worker_lock:
        if key not in _worker_state:
            _worker_state[key] = (blobs, concurrent.futures.ThreadPoolExecutor(settings.workers,
                                                                               thread_name_prefix="imgnet-shard"),
                                  DecodeBudget(settings.decode_memory))
        return _worker_state[key]


def _where(blobs: BlobStore, executor: Executor) -> tuple[str, str | None]:
    """The blob store's location and endpoint as a worker opens them (a folder as an absolute path)."""
    location = blobs.location
    if isinstance(executor, DaskExecutor) and not location.startswith("s3://"):
        location = os.path.abspath(location)  # a folder: the workers must see the same path
    return location, getattr(blobs, "endpoint_url", None)


def _worker_blobs(location: str, endpoint: str | None) -> BlobStore:
    with _worker_lock:
        key = ("blobs", location, endpoint)
        if key not in _worker_state:
            _worker_state[key] = open_blob_store(location, endpoint_url=endpoint)
        return _worker_state[key]


def _on_blobs(function: Callable[[BlobStore, str], Any], location: str, endpoint: str | None,
              keys: list[str]) -> list[Any]:
    blobs = _worker_blobs(location, endpoint)
    return [function(blobs, key) for key in keys]


def run_shard(shard: Shard) -> ShardResult:
    """On a worker: fetch, validate, hash and store every item of the shard; return the small records.

    A blob store failure raises (`BlobStoreFailed`) and fails the run at the coordinator."""
    blobs, pool, budget = _worker_resources(shard)
    settings = shard.settings
    hosts = HostLimiter(1, settings.host_rate / settings.per_host, shares=shard.shares)
    tools = Tools(settings, blobs, hosts, budget)
    outcomes = tuple(pool.map(lambda item: fetch_item(item, tools), shard.items))
    return ShardResult(outcomes, hosts.paused(), os.getpid())


def _host(item: Item, settings: FetchSettings) -> str:
    if item.source in settings.local_sources:
        return ""  # a file on disk: no host to be polite to
    try:
        return (urllib.parse.urlsplit(item.url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise BadInput("a Dask executor needs Dask distributed: pip install 'imgnet-build[dask]'") from exc
    return distributed


class DaskExecutor(Executor):
    """A Dask client: to a `LocalCluster` it starts (`dask-local:N`) or to a running scheduler (`dask://`)."""

    def __init__(self, spec: ExecutorSpec) -> None:
        distributed = _import_distributed()
        self.spec, self.cluster = spec, None
        if spec.kind == "dask-local":
            self.name = f"dask-local:{spec.workers}"
            self.cluster = distributed.LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=None, silence_logs=50)
            self.client = distributed.Client(self.cluster)
        else:
            self.name = f"dask://{spec.address.removeprefix('tcp://')}"
            try:
                self.client = distributed.Client(spec.address, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise BadInput(f"cannot reach the Dask scheduler at {spec.address}: {exc}") from exc

    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id (for tests and diagnostics)."""
        return self.client.run(os.getpid)

    def fetch(self, settings: FetchSettings, blobs: BlobStore) -> Batch:
        return _DaskBatch(self, settings, blobs)

    def map(self, function: Callable[[Any], Any], chunks: list[Any]) -> Iterator[Any]:
        futures = self.client.map(function, chunks, pure=False)
        try:
            for future in futures:
                yield future.result()
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


class _DaskBatch(Batch):
    """Items become shards; each shard carries its share of every host's politeness budget."""

    def __init__(self, executor: DaskExecutor, settings: FetchSettings, blobs: BlobStore) -> None:
        self.executor, self.settings = executor, settings
        self.distributed = _import_distributed()
        self.blobs, self.endpoint = _where(blobs, executor)
        self.workers = executor.workers()
        self.shard_size = max(8, settings.workers * SHARD_ITEMS)
        self.capacity = self.shard_size * self.workers * 2  # a shard running and one queued per worker
        self.buffer: deque[Item] = deque()
        self.futures: dict[Any, tuple[tuple[Item, ...], dict[str, tuple[int, float]]]] = {}
        self.granted: Counter[str] = Counter()  # host -> slots held by shards in flight
        self.paused_until: dict[str, float] = {}

    def submit(self, item: Item) -> None:
        self.buffer.append(item)
        if len(self.buffer) >= self.shard_size:
            self._dispatch()

    def in_flight(self) -> int:
        return len(self.buffer) + sum(len(items) for items, _ in self.futures.values())

    def _share(self, host: str, free: int) -> int:
        """How many of a host's free slots one shard gets: a share that leaves room for a second shard per
        worker (queued while the first runs), never the whole budget."""
        per_worker = max(1, -(-self.settings.per_host // (2 * self.workers)))  # two shards per worker
        return min(free, per_worker, self.settings.workers)

    def _dispatch(self) -> None:
        """Turn buffered items into shards while hosts have free slots."""
        settings, now = self.settings, time.monotonic()
        while self.buffer:
            items: list[Item] = []
            shares: dict[str, tuple[int, float]] = {}
            kept: deque[Item] = deque()
            while self.buffer and len(items) < self.shard_size:
                item = self.buffer.popleft()
                host = _host(item, settings)
                if host and host not in shares:
                    free = settings.per_host - self.granted[host]
                    if free <= 0 or self.paused_until.get(host, 0) > now:
                        kept.append(item)
                        continue
                    slots = self._share(host, free)
                    shares[host] = (slots, settings.host_rate * slots / settings.per_host)
                    self.granted[host] += slots
                items.append(item)
            self.buffer.extendleft(reversed(kept))
            if not items:
                return
            shard = Shard(settings, self.blobs, self.endpoint, tuple(items), shares)
            future = self.executor.client.submit(run_shard, shard, pure=False)
            self.futures[future] = (shard.items, shares)
            if len(self.buffer) < self.shard_size and self.futures:
                return  # a partial shard waits for more items (or for `completed`)

    def completed(self, timeout: float | None = None) -> list[tuple[Item, Outcome]]:
        self._dispatch()
        if not self.futures:
            if self.buffer:  # every host in the buffer is paused: wait for the first pause to end
                time.sleep(max(0.05, min(self.paused_until.values(), default=0) - time.monotonic()))
                self._dispatch()
            if not self.futures:
                return []
        try:
            done = self.distributed.wait(list(self.futures), timeout, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            return []
        results: list[tuple[Item, Outcome]] = []
        for future in done:
            items, shares = self.futures.pop(future)
            for host, (slots, _rate) in shares.items():
                self.granted[host] -= slots
            result: ShardResult = future.result()  # a worker's error (a broken blob store) stops the run here
            for host, seconds in result.paused.items():
                self.paused_until[host] = max(self.paused_until.get(host, 0), time.monotonic() + seconds)
            results += zip(items, result.outcomes, strict=True)
        return results

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.client.cancel(list(self.futures))
        self.futures.clear()
        self.buffer.clear()

    def close(self) -> None:
        self.abandon()


def open_executor(value: str | Executor | None) -> Executor:
    """An executor from its setting (`local`, `dask-local:N`, `dask://HOST:PORT`) or as given."""
    if isinstance(value, Executor):
        return value
    spec = parse_executor(value or DEFAULT_EXECUTOR)
    return LocalExecutor() if spec.kind == "local" else DaskExecutor(spec)
