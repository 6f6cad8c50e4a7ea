"""``sts-wire status``: the running sts-wire instances, their mounts, key expiry and renewals
(from their state files: no secret is in them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import mounts as fs
from ..errors import Exit
from ..runtime import default_base, instances, pid_alive


def _ago(ts: str | None) -> str:
    if not ts:
        return "never"
    import datetime

    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    d = t - time.time()
    return f"in {int(d)} s" if d >= 0 else f"{int(-d)} s ago"


def cmd_status(args) -> int:
    base = Path(args.runtime_dir) if args.runtime_dir else default_base()
    found = []
    table = fs.mount_table()
    for pid, d in instances(base):
        try:
            st = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
        st["alive"] = pid_alive(pid)
        for m in st.get("mounts", []):
            m["mounted_now"] = m["path"] in table and table[m["path"]].fstype.startswith("fuse")
        found.append(st)
    if args.json:
        print(json.dumps({"runtime_dir": str(base), "instances": found}, indent=1))
    elif not found:
        print(f"no sts-wire is running (looked in {base})")
    for st in [] if args.json else found:
        print(f"sts-wire pid {st['pid']}{'' if st['alive'] else ' (NOT RUNNING: stale state)'}, user "
              f"{st.get('user')}, started {st.get('started')}")
        print(f"  token:  {st.get('token_source')}, expires {_ago(st.get('token_expires'))}")
        print(f"  keys:   {st.get('access_key') or '-'} expire {_ago(st.get('keys_expire'))}; last renewal "
              f"{_ago(st.get('last_renewal'))}; renewals: {st.get('key_renewals', 0)}")
        if st.get("last_error"):
            print(f"  error:  {st['last_error']}")
            if st.get("last_error_hint"):
                print(f"  what to do: {st['last_error_hint']}")
        for m in st.get("mounts", []):
            flag = "" if m["mounted_now"] == (m["state"] == "ready") else " (mount table disagrees)"
            print(f"  {m['path']:<28} {m['remote']:<20} {m['state']}{flag}, remounts {m.get('remounts', 0)}"
                  + (f"\n    {m['last_error']}" if m.get("last_error") and m["state"] != "ready" else ""))
    if not found:
        return int(Exit.FAILURE)
    ok = all(st["alive"] and all(m["state"] == "ready" for m in st.get("mounts", [])) for st in found)
    return 0 if ok else int(Exit.MOUNT_FAILED)
