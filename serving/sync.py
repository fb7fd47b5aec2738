"""``GET /scores``: every customer's scores for the served snapshot, for a CRM's full-base sync.

A snapshot never changes once scored, so its answer is written once, to files, and then streamed
from them: for each snapshot (its :attr:`~serving.state.ScoredSnapshot.tag`, the model version
and the snapshot's content id) :class:`SyncFiles` writes, in a background thread right after the
snapshot starts being served,

* ``<tag>.ndjson``: one line per customer in snapshot order, the customer's ``/score`` answer
  without reasons (the same records, :meth:`~serving.state.ScoredSnapshot.records`, so the two
  cannot differ), and ``<tag>.offsets.npy``, where each line starts;
* ``<tag>.parquet``: the same columns as one Parquet file (dates as dates, nulls as nulls);
* ``<tag>.keys.parquet``: each customer id and the 64-bit hash of their scores
  (:func:`serving.state.row_hashes`), what ``since=<tag>`` compares with later.

The files live in ``WINBACK_SYNC_DIR`` (one folder per service; see :mod:`serving.config`),
shared by the workers: the first worker to serve a snapshot writes them under a file lock, the
others find them written. The newest few snapshots' keys are kept (``since`` can name any of
them), the data files of the newest two. A ``since`` whose keys are gone gets the full base
with ``X-Sync: full-since-unknown``. Streaming a file costs a read per MiB: what makes the sync
several times faster than asking ``/score`` a thousand ids at a time, and its memory flat.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from features.output import atomic_path

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from serving.state import ScoredSnapshot

logger = logging.getLogger("winback.serving")

NDJSON = "application/x-ndjson"
PARQUET = "application/vnd.apache.parquet"
#: Customers per chunk written (and per Parquet row group).
CHUNK = 16_384
READ = 1 << 20
_SEPARATOR = b'},{"customer_id":'
_TAG = re.compile(r'^(?:W/)?"?([0-9A-Za-z._-]{1,128})"?$')


class SyncFiles:
    """The sync files of the snapshots this worker serves, in ``folder`` (see the module)."""

    def __init__(self, folder: Path, keep_keys: int = 8, keep_data: int = 2) -> None:
        self.folder = folder
        self.keep_keys, self.keep_data = keep_keys, keep_data
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from serving.config import ConfigError

            raise ConfigError(f"WINBACK_SYNC_DIR: cannot create {folder} ({exc.strerror}); set it to a folder "
                              "the service can write") from None
        self._jobs: dict[str, Future] = {}
        self._lock = threading.Lock()

    def path(self, tag: str, kind: str) -> Path:
        """Where the file of ``kind`` (``ndjson``, ``parquet``, ...) of snapshot ``tag`` is."""
        return self.folder / f"{tag}.{kind}"

    def prepare(self, state: "ScoredSnapshot") -> Future:
        """Write ``state``'s files in a background thread (once per tag); the job's future."""
        with self._lock:
            job = self._jobs.get(state.tag)
            if job is None:
                job = self._jobs[state.tag] = Future()
                thread = threading.Thread(target=self._run, args=(state, job), name="winback-sync-files",
                                          daemon=True)
                thread.start()
            for tag in list(self._jobs)[:-self.keep_data]:
                del self._jobs[tag]
            return job

    def _run(self, state: "ScoredSnapshot", job: Future) -> None:
        try:
            self.write(state)
            job.set_result(None)
        except Exception as exc:                                # said to the request that waits
            logger.error("the sync files of %s could not be written: %s: %s", state.tag, type(exc).__name__, exc)
            job.set_exception(exc)

    def write(self, state: "ScoredSnapshot") -> None:
        """Write ``state``'s files unless another worker has (under a lock on ``<tag>.lock``)."""
        kinds = ("ndjson", "offsets.npy", "parquet", "keys.parquet")
        with open(self.path(state.tag, "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if all(self.path(state.tag, k).is_file() for k in kinds):
                os.utime(self.path(state.tag, "keys.parquet"))  # newest: kept longest
                return
            write_ndjson(state, self.path(state.tag, "ndjson"), self.path(state.tag, "offsets.npy"))
            write_parquet(state, self.path(state.tag, "parquet"))
            write_keys(state, self.path(state.tag, "keys.parquet"))
        self._tidy()

    def _tidy(self) -> None:
        """Keep the keys of the newest ``keep_keys`` snapshots and the data of the newest ``keep_data``."""
        keys = sorted(self.folder.glob("*.keys.parquet"), key=lambda p: p.stat().st_mtime, reverse=True)
        for rank, path in enumerate(keys):
            tag = path.name.removesuffix(".keys.parquet")
            if rank >= self.keep_data:
                for kind in ("ndjson", "offsets.npy", "parquet"):
                    self.path(tag, kind).unlink(missing_ok=True)
            if rank >= self.keep_keys:
                path.unlink(missing_ok=True)
                self.path(tag, "lock").unlink(missing_ok=True)

    async def ready(self, state: "ScoredSnapshot") -> None:
        """Wait until ``state``'s files are written (by this worker or another)."""
        job = self.prepare(state)
        await asyncio.wrap_future(job)
        if not self.path(state.tag, "ndjson").is_file():       # tidied away by a newer snapshot's job
            with self._lock:
                self._jobs.pop(state.tag, None)
            await asyncio.wrap_future(self.prepare(state))

    def known(self, tag: str) -> bool:
        """Whether the keys of snapshot ``tag`` are still kept (so ``since=tag`` can be answered)."""
        return self.path(tag, "keys.parquet").is_file()


# ---------------------------------------------------------------------- writing


def _records(state: "ScoredSnapshot", positions: np.ndarray) -> list[dict]:
    """``/score``'s records (``reasons: false``) of the snapshot rows ``positions``."""
    as_of = state.as_of.date().isoformat()
    ids = state.ids[positions].tolist()
    return state.records(positions, {"customer_id": ids, "status": repeat("ok"), "as_of": repeat(as_of)})


def ndjson_chunk(records: list[dict]) -> bytes:
    """``records`` as NDJSON lines. One ``orjson.dumps`` of the list, its separators turned into
    newlines: ``},{"customer_id":`` cannot occur inside a JSON string (a quote there is escaped),
    and every record starts with ``customer_id``."""
    if not records:
        return b""
    return orjson.dumps(records)[1:-1].replace(_SEPARATOR, b'}\n{"customer_id":') + b"\n"


def write_ndjson(state: "ScoredSnapshot", path: Path, offsets_path: Path) -> None:
    """Every customer's line, and where each starts (``len + 1`` offsets), each file atomically."""
    offsets = [np.zeros(1, dtype=np.int64)]
    written = 0
    with atomic_path(path) as partial, open(partial, "wb") as out:
        for start in range(0, state.size, CHUNK):
            chunk = ndjson_chunk(_records(state, np.arange(start, min(start + CHUNK, state.size))))
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + 1
            offsets.append(ends.astype(np.int64) + written)
            out.write(chunk)
            written += len(chunk)
    with atomic_path(offsets_path) as partial, open(partial, "wb") as out:
        np.save(out, np.concatenate(offsets))


def _arrow_chunk(state: "ScoredSnapshot", positions: np.ndarray, removed: list[str] | None = None):
    """The rows ``positions`` as an Arrow table of ``/score``'s fields (``removed`` ids appended
    as ``status: removed`` rows of nulls)."""
    import pyarrow as pa

    day = np.datetime64(state.as_of.date(), "D")
    columns = {"customer_id": pa.array(state.ids[positions].tolist(), pa.string()),
               "status": pa.array(["ok"] * len(positions), pa.string()),
               "as_of": pa.array(np.full(len(positions), day), pa.date32())}
    for name, (kind, values) in state.score_columns.items():
        part = values[positions]
        if kind == "date":
            columns[name] = pa.array(part, pa.date32(), mask=np.isnat(part))
        elif kind == "object":
            columns[name] = pa.array(part.tolist(), type=_object_type(values))
        else:
            columns[name] = pa.array(part)
    table = pa.table(columns)
    if removed:
        gone = {name: pa.nulls(len(removed), table.schema.field(name).type) for name in table.column_names}
        gone["customer_id"] = pa.array(removed, pa.string())
        gone["status"] = pa.array(["removed"] * len(removed), pa.string())
        table = pa.concat_tables([table, pa.table(gone, schema=table.schema)])
    return table


def _object_type(values: np.ndarray):
    """The Arrow type of a score column held as Python objects: text, or numbers with gaps."""
    import pyarrow as pa

    for value in values:
        if value is not None:
            return pa.string() if isinstance(value, str) else pa.float64()
    return pa.string()


def write_parquet(state: "ScoredSnapshot", path: Path, positions: np.ndarray | None = None,
                  removed: list[str] | None = None) -> None:
    """``state``'s rows (all, or ``positions``) as one Parquet file, atomically."""
    import pyarrow.parquet as pq

    positions = np.arange(state.size) if positions is None else positions
    schema = _arrow_chunk(state, positions[:0]).schema
    with atomic_path(path) as partial, pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, len(positions), CHUNK * 4):
            writer.write_table(_arrow_chunk(state, positions[start:start + CHUNK * 4]))
        if removed:
            writer.write_table(_arrow_chunk(state, positions[:0], removed))


def write_keys(state: "ScoredSnapshot", path: Path) -> None:
    """Each customer id and the hash of their scores, for a later ``since``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as partial:
        pq.write_table(pa.table({"customer_id": pa.array(state.ids.tolist(), pa.string()),
                                 "row_hash": pa.array(state.row_hashes, pa.uint64())}), partial)


def changes_since(state: "ScoredSnapshot", keys_path: Path) -> tuple[np.ndarray, list[str]]:
    """(positions of customers new or changed since the snapshot of ``keys_path``, ids of
    customers it had that ``state`` has not)."""
    import pandas as pd
    import pyarrow.parquet as pq

    old = pq.read_table(keys_path)
    old_ids = pd.Index(old.column("customer_id").to_numpy(zero_copy_only=False))
    old_hashes = old.column("row_hash").to_numpy()
    found = old_ids.get_indexer(pd.Index(state.ids))
    changed = (found < 0) | (old_hashes[np.maximum(found, 0)] != state.row_hashes)
    present = np.zeros(len(old_ids), dtype=bool)
    present[found[found >= 0]] = True
    return np.flatnonzero(changed), old_ids[~present].tolist()


# ---------------------------------------------------------------------- answering


def _wanted_format(accept: str | None) -> str | None:
    """The media type to send for an ``Accept`` header: Parquet when asked for, NDJSON when the
    header is absent or admits it (``*/*``, ``application/*``, ``application/x-ndjson``,
    ``application/json``), None when it admits neither (a 406)."""
    if not accept:
        return NDJSON
    admitted = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in params if p.replace(" ", "").startswith("q=")), "1")
        try:
            if float(q) <= 0:
                continue
        except ValueError:
            continue
        admitted.append(media.lower())
    if PARQUET in admitted:
        return PARQUET
    if any(m in admitted for m in (NDJSON, "application/json", "application/*", "*/*")):
        return NDJSON
    return None


def _tags(header: str) -> list[str]:
    """The entity tags of an ``If-None-Match`` header (``*`` as itself)."""
    tags = []
    for part in header.split(","):
        part = part.strip()
        if part == "*":
            tags.append("*")
        elif (match := _TAG.match(part)) is not None:
            tags.append(match.group(1))
    return tags


async def sync_answer(files: SyncFiles, state: "ScoredSnapshot", request: "Request") -> "Response":
    """The answer to ``GET /scores`` (see the module and the OpenAPI document)."""
    from starlette.responses import Response, StreamingResponse

    from serving.schemas import error_answer, query_params

    query = query_params(request, ("since",))
    if not isinstance(query, dict):
        return query
    since = None
    if "since" in query:
        match = _TAG.match(query["since"])
        if match is None:
            return error_answer(400, "since", "must be an ETag of an earlier answer, like \"3-1a2b3c4d5e6f7a8b\"")
        since = match.group(1)
    wanted = _wanted_format(request.headers.get("accept"))
    if wanted is None:
        return error_answer(406, "Accept", f"send Accept: {NDJSON} (the default) or {PARQUET}")
    etag = f'"{state.tag}"'
    headers = {"ETag": etag, "X-Model-Version": state.model.version}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and len(if_none_match) > 1024:
        return error_answer(400, "If-None-Match", "at most 1,024 characters: the ETag of an earlier answer")
    if if_none_match and ({"*", state.tag} & set(_tags(if_none_match))):
        return Response(status_code=304, headers=headers)
    try:
        await files.ready(state)
    except Exception:
        return error_answer(500, "body", "the sync files could not be written; the server log says why")
    mode, positions, removed = "full", None, list[str]()
    if since is not None:
        if since == state.tag:
            mode, positions = "delta", np.zeros(0, dtype=np.int64)
        elif files.known(since):
            positions, removed = await asyncio.to_thread(changes_since, state, files.path(since, "keys.parquet"))
            mode = "delta"
        else:
            mode = "full-since-unknown"
    count = state.size if positions is None else len(positions) + len(removed)
    headers.update({"X-Sync": mode, "X-Customers": str(count)})
    if wanted == PARQUET:
        if positions is None:
            body = _file_chunks(files.path(state.tag, "parquet"))
        else:
            body = _delta_parquet(state, files, positions, removed)
        return StreamingResponse(body, media_type=PARQUET, headers=headers)
    if positions is None:
        body = _file_chunks(files.path(state.tag, "ndjson"))
    else:
        body = _delta_lines(files, state.tag, positions, removed)
    return StreamingResponse(body, media_type=NDJSON, headers=headers)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, a MiB at a time (read in a thread: the event loop keeps answering)."""
    with open(path, "rb") as source:        # once open (streaming started), a later tidy cannot take it away
        while True:
            chunk = await asyncio.to_thread(source.read, READ)
            if not chunk:
                return
            yield chunk


async def _delta_lines(files: SyncFiles, tag: str, positions: np.ndarray,
                       removed: list[str]) -> AsyncIterator[bytes]:
    """The NDJSON lines of ``positions`` (read from the snapshot's file), then ``removed`` lines."""
    offsets = np.load(files.path(tag, "offsets.npy"), mmap_mode="r")
    with open(files.path(tag, "ndjson"), "rb") as source:
        fd = source.fileno()

        def read(batch: np.ndarray) -> bytes:
            return b"".join(os.pread(fd, int(offsets[p + 1] - offsets[p]), int(offsets[p])) for p in batch)

        for start in range(0, len(positions), 4096):
            yield await asyncio.to_thread(read, positions[start:start + 4096])
    for start in range(0, len(removed), 4096):
        yield b"".join(orjson.dumps({"customer_id": cid, "status": "removed"}, option=orjson.OPT_APPEND_NEWLINE)
                       for cid in removed[start:start + 4096])


async def _delta_parquet(state: "ScoredSnapshot", files: SyncFiles, positions: np.ndarray,
                         removed: list[str]) -> AsyncIterator[bytes]:
    """The rows of ``positions`` and the ``removed`` ids as one Parquet file, written to a
    temporary file in the sync folder and streamed from it."""
    import tempfile

    handle, name = tempfile.mkstemp(dir=files.folder, suffix=".delta.parquet")
    os.close(handle)
    path = Path(name)
    try:
        await asyncio.to_thread(write_parquet, state, path, positions, removed)
        async for chunk in _file_chunks(path):
            yield chunk
    finally:
        path.unlink(missing_ok=True)
