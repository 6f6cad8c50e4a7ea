"""``sts-wire run --spec SPEC -- CMD``: mount everything, run CMD, unmount when it ends.

This is how every notebook server starts, often as its container's PID 1: signals only set a
flag (see sts_wire.process); stop signals reach CMD, which decides when to end; every exited
child is reaped; the exit status is CMD's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys

from ..app import App, first_failure
from ..errors import Exit, StsWireError
from ..process import STOP_SIGNALS, Signals, reap
from ..report import start_reporter
from ..tokens import secret_env_names

log = logging.getLogger("sts_wire")


def cmd_run(args) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise StsWireError("run needs a command after --", Exit.USAGE,
                           "sts-wire run --spec FILE -- jupyterhub-singleuser")
    signals = Signals().install()
    app = None
    try:
        app = App(args)
        sup = app.prepare(should_stop=lambda: signals.stopping)
        failed = [] if signals.stopping else sup.start()
        if signals.stopping:
            log.info("stopping on signal %d before the command started", signals.stop)
            return 128 + signals.stop
        required = [m for m in failed if not m.spec.optional]
        if required and args.strict:
            err = first_failure(sup, required)
            raise StsWireError(f"not starting {cmd[0]} (--strict): {err.message}", err.code, err.hint)
        for m in failed:
            log.warning("%s is not mounted: %s (see %s)", m.path, m.last_error.message if m.last_error else "?",
                        m.note_file)
        return _run_child(cmd, app, sup, signals)
    finally:
        if app is not None:
            app.close()
        signals.restore()


def _run_child(cmd: list[str], app: App, sup, signals: Signals) -> int:
    env = {k: v for k, v in os.environ.items() if k not in secret_env_names(app.spec.token)}
    env["STS_WIRE_RUNTIME_DIR"] = str(app.runtime.base)
    tty_group = sys.stdin.isatty()
    try:
        child = subprocess.Popen(cmd, env=env, process_group=None if tty_group else 0)
    except OSError as e:
        raise StsWireError(f"cannot start {cmd[0]}: {e.strerror}", Exit.USAGE) from None
    reporter = start_reporter(sup, app.runtime.state_file)  # to the hub, when in a hub's server
    log.info("started %s (pid %d)", cmd[0], child.pid)
    while True:
        for sig in signals.take():
            # At a terminal, Ctrl-C already reached CMD (same process group).
            if sig != signal.SIGCHLD and not (sig == signal.SIGINT and tty_group) and child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)
            if sig in STOP_SIGNALS:
                log.info("signal %d passed on to %s", sig, cmd[0])
        reap([child, *sup.processes()])
        if child.poll() is not None:
            break
        sup.tick()
        signals.wait(0.2)
    code = child.returncode
    if reporter is not None:
        reporter.stop()
    log.info("%s ended with status %s; unmounting", cmd[0], code)
    return 128 - code if code < 0 else code
