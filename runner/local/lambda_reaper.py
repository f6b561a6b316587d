"""The keeper of one local Lambda environment's processes: what a handler starts dies
with the environment, whatever becomes of the stack.

On Lambda everything in a sandbox is frozen, and ended, together. Locally the worker
(runner.local.lambda_worker) leads a process group, but a process a handler starts in a
session of its own (`start_new_session=True`) leaves it, and a process whose parent
died is re-parented out of reach. So each environment is started as this small program
(stdlib only, run with `-I -S`), which:

- makes itself a child subreaper (PR_SET_CHILD_SUBREAPER): every process below it
  stays below it, orphaned or not, so `descendants()` finds all of them in /proc;
- starts the worker (its own process group and session) and waits;
- when the worker exits, kills what is left below it and exits the way the worker did
  (its exit status, or the same signal), which is what the endpoint reports;
- when its lifeline (a pipe whose other end only the endpoint holds) reaches end of
  file, i.e. the endpoint stopped or was killed outright (`kill -9` of the stack's
  process group: this program has a session of its own), kills everything below it.

It is never frozen; the endpoint freezes the worker's group and the escaped processes
`descendants()` finds (runner.local.lambda_env).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def children_by_parent() -> dict[int, list[int]]:
    """Parent pid → its children's pids, from /proc."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below `root` (not `root` itself), parents before children
    (`children`: a `children_by_parent()` already read)."""
    children = children_by_parent() if children is None else children
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def group_of(pid: int) -> int:
    """The process group of `pid` (-1: gone)."""
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return -1


def rss_bytes(pids: Sequence[int]) -> int:
    """The resident memory of these processes together (those still there)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue
    return total


def signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_below(root: int, *, reap: bool = False) -> None:
    """Stop, then kill, everything below `root`, until nothing is left (a process
    forking meanwhile is stopped first, so the next round finds its children). `reap`:
    `root` is this process, which reaps them (others are reaped by their parents)."""
    for _ in range(10):
        pids = [p for p in descendants(root) if not _is_zombie(p)]
        if not pids:
            return
        signal_all(pids, signal.SIGSTOP)
        signal_all(descendants(root), signal.SIGKILL)
        if reap:
            _reap()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _reap() -> dict[int, int]:
    """Reap every exited child (orphans come to a subreaper); their statuses by pid."""
    statuses: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def _exit_as(status: int) -> None:
    """Exit as the worker did: the same signal, or the same exit status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be handled
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--pass-fd", type=int, action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the stack
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    terminated: list[int] = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda number, _: terminated.append(number))
    worker = subprocess.Popen(command, pass_fds=args.pass_fd, start_new_session=True)
    for fd in args.pass_fd:
        os.close(fd)
    status: int | None = None
    ended = False
    while status is None and not ended and not terminated:
        try:
            ready, _, _ = select.select([args.lifeline_fd, wake_read], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 512)
        if args.lifeline_fd in ready and not os.read(args.lifeline_fd, 512):
            ended = True  # the endpoint is gone
        status = _reap().get(worker.pid, status)
    worker.returncode = 0  # reaped here, never by Popen
    if status is None:  # the endpoint went away (or SIGTERM): end the worker with the rest
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        kill_below(os.getpid(), reap=True)
        return 0
    kill_below(os.getpid(), reap=True)
    _exit_as(status)
    return 1


if __name__ == "__main__":
    sys.exit(main())
