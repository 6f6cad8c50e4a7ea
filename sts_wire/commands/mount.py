"""``sts-wire mount BUCKET FOLDER``: one bucket (or the spec's mounts) in the foreground, for a
person at a terminal, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import sys

from ..app import App, first_failure
from ..errors import SpecError
from ..process import Signals, reap

log = logging.getLogger("sts_wire")


def cmd_mount(args) -> int:
    signals = Signals().install()
    app = None
    try:
        app = App(args)
        if not app.spec.mounts:
            raise SpecError(["nothing to mount: give BUCKET[/PREFIX] FOLDER, or a spec with mounts"])
        sup = app.prepare(should_stop=lambda: signals.stopping)
        failed = [] if signals.stopping else sup.start()
        if signals.stopping:     # before every mount was up: say which signal ended the start
            log.info("stopping on signal %d", signals.stop)
            return 128 + signals.stop
        if failed:
            raise first_failure(sup, failed)
        for m in sup.mounts:
            print(f"sts-wire: mounted {m.spec.remote} on {m.path}", file=sys.stderr)
        print("sts-wire: press Ctrl-C to unmount", file=sys.stderr, flush=True)
        while not signals.stopping:
            signals.take()
            reap(sup.processes())
            sup.tick()
            signals.wait(0.2)
        print("sts-wire: unmounting...", file=sys.stderr, flush=True)
        return 0
    finally:
        if app is not None:
            app.close()
        signals.restore()
