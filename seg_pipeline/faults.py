"""How the CLI meets faults: signals, unexpected errors, a home it cannot write, a full disk.

- SIGINT and SIGTERM during `seg-pipeline run` are recorded (SignalWatch) and acted on at the next safe
  point: between two Dagster runs, or inside a step through Dagster's own interruption (the step fails, its
  transaction rolls back). The CLI then says where it stopped and exits 128 + the signal number.
- Any other unexpected exception becomes one line naming the step and the cause; the full trace goes to a
  log file (<home>/logs/seg-pipeline-<UTC time>.log, or the temp folder when the home is not writable).
- A full disk or an unwritable home is named as such, with the path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
import signal
import tempfile
import traceback
from pathlib import Path

WATCHED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised at a safe point after SIGINT or SIGTERM; `where` is the step that was running or next."""

    def __init__(self, signum: int, where: str):
        super().__init__(signum, where)
        self.signum = signum
        self.where = where

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        where = f" {self.where}" if self.where else ""
        return (
            f"seg-pipeline: interrupted by {signal.Signals(self.signum).name}{where}; "
            "tables are at their last published version"
        )


class SignalWatch:
    """Records SIGINT and SIGTERM instead of acting on them at once; `check(where)` raises Interrupted if one
    arrived. Both signals get the same handler because Dagster's in-process execution, on leaving each run,
    maps SIGTERM to whatever handles SIGINT. While a Dagster run executes, Dagster's handlers are installed
    instead: inside a step they raise its DagsterExecutionInterruptedError, elsewhere they only set a flag,
    which Dagster clears when the run ends, so a signal arriving as a run finishes would be lost. Every
    signal is therefore also recorded through signal.set_wakeup_fd, which CPython writes whichever Python
    handler runs. A second signal while the watch's own handler is installed (the CLI's code between
    steps, e.g. waiting for the warehouse lock) raises Interrupted at once. Use from the main thread only."""

    def __init__(self) -> None:
        self._seen: list[int] = []
        self._old_handlers: dict[int, object] = {}
        self._old_fd = -1
        self._pipe: tuple[int, int] | None = None

    def _record(self, signum, _frame) -> None:
        self._drain()  # this signal's own byte included
        if len(self._seen) > 1:
            raise Interrupted(signum, state.where or "")

    def install(self) -> SignalWatch:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for s in WATCHED:
            self._old_handlers[s] = signal.signal(s, self._record)
        return self

    def uninstall(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers.clear()
        if self._pipe is not None:
            self._drain()
            signal.set_wakeup_fd(self._old_fd)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _drain(self) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._pipe[0], 512):
                self._seen.extend(b for b in data if b in WATCHED)

    def received(self) -> int | None:
        """The first SIGINT or SIGTERM received since install, or None."""
        self._drain()
        return self._seen[0] if self._seen else None

    def check(self, where: str) -> None:
        signum = self.received()
        if signum is not None:
            raise Interrupted(signum, where)

    def __enter__(self) -> SignalWatch:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()


# -- unexpected errors -------------------------------------------------------------------------------------


def _log_folder(home: Path | None) -> tuple[Path, str]:
    """<home>/logs, created; or a folder in the temp dir, with a note, when the home cannot be written."""
    if home is not None:
        folder = Path(home) / "logs"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder, ""
        except OSError:
            pass
    folder = Path(tempfile.gettempdir()) / "seg-pipeline-logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder, (f"the home {home} is not writable, so the log is in the temp folder: " if home else "")


def write_error_log(exc: BaseException, where: str, home: Path | None) -> tuple[Path, str]:
    """Write the full trace of `exc` to a new log file; returns its path and a note on where it went."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    text = f"seg-pipeline: unexpected error {where}\n\n" + "".join(traceback.format_exception(exc))
    folder, note = _log_folder(home)
    path = folder / f"seg-pipeline-{stamp}.log"
    try:
        path.write_text(text)
    except OSError:  # the home's logs/ exists but cannot take a file (a full disk): the temp folder then
        folder, note = _log_folder(None)
        path = folder / f"seg-pipeline-{stamp}.log"
        path.write_text(text)
        note = f"the home {home} could not take the log, so it is in the temp folder: "
    return path, note


def unexpected_error_line(exc: BaseException, where: str, home: Path | None, dagster_home: Path | None = None) -> str:
    """One line for an unexpected exception: where, the cause (class name and first line), the log file."""
    cause = no_space_message(exc, home, dagster_home) or (
        f"{type(exc).__name__}: {first_line(str(exc)) or '(no message)'}"
    )
    try:
        path, note = write_error_log(exc, where, home)
        log = f"{note}full trace in {path}"
    except OSError as log_exc:
        log = f"the trace could not be written anywhere ({log_exc.strerror})"
    return f"seg-pipeline: unexpected error {where}: {cause} ({log})"


def first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


# -- a home that cannot be written, a full disk ------------------------------------------------------------

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def check_writable(folder: Path, what: str) -> None:
    """Raise NotWritable unless `folder` can be created and a file written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NotWritable(folder, what, exc, f"it cannot be created ({exc.filename})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".seg-pipeline-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NotWritable(folder, what, exc, "a file cannot be created in it") from exc


class NotWritable(Exception):
    def __init__(self, folder: Path, what: str, exc: OSError, detail: str):
        reason = _REASONS.get(exc.errno, exc.strerror or type(exc).__name__)
        super().__init__(f"{what} {folder} is not writable ({reason}): {detail} [Errno {exc.errno}]")


NO_SPACE = re.compile(r"no space left on device|disk quota exceeded", re.IGNORECASE)
# SQLite (Dagster's run history) says "database or disk is full", or on a full disk often "disk I/O error"
SQLITE_FULL = re.compile(r"sqlite3\.OperationalError\)? (database or disk is full|disk I/O error)")


def _disk_full(folder: Path | None) -> bool:
    """Whether the file system of `folder` (or its nearest existing parent) has no room left (< 64 KiB)."""
    if folder is None:
        return False
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def no_space_message(
    exc_or_text: BaseException | str, home: Path | None = None, dagster_home: Path | None = None
) -> str | None:
    """The message "no space left on device while writing <path>" if the error (or its causes, or the text) is a full
    disk, else None. The path: the file the OSError names, else a quoted path inside the home in the text
    (DuckDB names the file it could not write), else the warehouse and DuckDB's temp folder."""
    texts, paths = [], []
    if isinstance(exc_or_text, BaseException):
        e: BaseException | None = exc_or_text
        while e is not None:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                texts.append("No space left on device")
                if e.filename:
                    paths.append(str(e.filename))
            texts.append(str(e))
            e = e.__cause__ or e.__context__
    else:
        texts.append(exc_or_text)
    text = "\n".join(texts)
    sqlite = SQLITE_FULL.search(text)
    if sqlite and dagster_home is not None and ("full" in sqlite.group(1) or _disk_full(dagster_home)):
        return f"no space left on device while writing Dagster's run history in {dagster_home}"
    if not NO_SPACE.search(text):
        return None
    return f"no space left on device while writing {(paths or [written_path(text, home)])[0]}"


def written_path(text: str, home: Path | None) -> str:
    """The path in a full-disk message that the pipeline writes (inside the home), else the warehouse."""
    home_s = str(home) if home else None
    for m in re.finditer(r"""["']([^"'\n]+)["']""", text):
        p = m.group(1)
        if p.startswith("/") and (home_s is None or p.startswith(home_s)):
            return p
    if home is None:
        return "the warehouse"
    return f"the warehouse {Path(home) / 'warehouse.duckdb'} (or DuckDB's temp folder {Path(home) / 'duckdb_tmp'})"


class RunState:
    """What the CLI is doing now, for the messages above: `where` ("during quarter 2011-07-01"), the home
    (for the log folder) and the SignalWatch of `seg-pipeline run` (None in other commands and in process)."""

    def __init__(self) -> None:
        self.where = ""
        self.home: Path | None = None
        self.dagster_home: Path | None = None
        self.watch: SignalWatch | None = None

    def check(self, where: str) -> None:
        if self.watch is not None:
            self.watch.check(where)

    def received(self) -> int | None:
        return self.watch.received() if self.watch is not None else None


state = RunState()
