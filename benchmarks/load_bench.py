"""Hub load benchmark (issue 10, Load): many logins and spawns at once, and a token stampede.
Real IdP (oidc-provider), real JupyterHub with CloudSpawner (local backend). Prints JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/load_bench.py [--logins 30] [--spawns 10]
        [--callers 100] [--token-users 20] [--quick] [--no-report]

load.logins-and-spawns: --logins users log in through the hub's OAuth flow at the same moment;
the first --spawns of them start a server (physics-cpu, 1 CPU, 1G) as soon as their login is done,
so spawns overlap the other logins. A poller reads GET /hub/api/users/alice every 50 ms meanwhile:
its p50/p99 under load, and for 5 s before (idle). Target: no failed login or spawn.

load.token-stampede: --token-users users log in at a second hub whose IdP gives access tokens of
30 s (refresh margin 20 s); once every token is near expiry, --callers holders of a server-scoped
token (custom:jhub-cloud:access-token, --callers / --token-users per user, as servers' sts-wire
hold) ask GET /hub/api/jhub-cloud/users/<name>/token at the same instant. Targets: every caller
answered 200 with its user's new token; exactly one refresh grant per user at the IdP.

Users: benchmark-only users jcbench01.. are added to the IdP (group physics); the local backend
runs servers as system users, so the first --spawns of them are created with useradd if missing
(and left in place). Needs root and the testbed (tests/testbed); everything it starts is stopped
by PID at the end. Full size takes about 1.5 minutes here (2 cores). Exit status 1 when a target is
missed. Unless --no-report, the figures go to docs/reliability.md (record_measurement).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.cloudhub import CloudHub  # noqa: E402
from tests.testbed.hub import Hub  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.procs import stop_services, unmount_all_under  # noqa: E402
from tests.testbed.reliability import record_measurement  # noqa: E402

SOURCE = "benchmarks/load_bench.py"
OPTIONS = {"profile": "physics-cpu", "cpu": 1, "memory": "1G"}
AT_TTL = 30   # access-token lifetime at the stampede's IdP, seconds
MARGIN = 20   # the hub refreshes a token with less than this left


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def bench_users(n: int) -> list[str]:
    return [f"jcbench{i:02d}" for i in range(1, n + 1)]


def add_idp_users(idp: IdP, names: list[str]) -> None:
    """Benchmark users at the IdP (it re-reads its users file on every request)."""
    users = json.loads(idp.users_file.read_text())
    users.update({u: {"password": f"{u}-pw", "groups": ["physics"]} for u in names})
    idp.users_file.write_text(json.dumps(users))


def ensure_os_user(name: str) -> None:
    """The local backend runs a server as the user's system account."""
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)


class Poller:
    """GET /hub/api/users/<user> every 50 ms on a thread; latencies and failures."""

    def __init__(self, hub: Hub, user: str):
        self.hub, self.user = hub, user
        self.lat: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = self.hub.api("GET", f"/users/{self.user}").status_code == 200
            except requests.RequestException:
                ok = False
            self.lat.append(time.perf_counter() - t0)
            self.errors += not ok
            self._stop.wait(0.05)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict:
        return {"requests": len(self.lat), "errors": self.errors,
                "p50_ms": round(1000 * pct(self.lat, 0.5), 1), "p99_ms": round(1000 * pct(self.lat, 0.99), 1)}


def logins_and_spawns(hub: CloudHub, users: list[str], spawners: int) -> dict:
    """Every user logs in at once; the first `spawners` then start a server. Failures counted."""
    barrier = threading.Barrier(len(users))

    def one(i: int, user: str) -> dict:
        out = {"user": user}
        barrier.wait()
        t0 = time.perf_counter()
        try:
            _, r = hub.login(user)
            out["login_ok"] = r.status_code == 302 and "/hub/oauth_callback" not in r.headers.get("location", "")
            if not out["login_ok"]:
                out["error"] = f"login answered {r.status_code}: {r.text[:200]}"
        except Exception as e:  # noqa: BLE001 - counted as a failed login
            out["login_ok"], out["error"] = False, f"{type(e).__name__}: {e}"
        out["login_s"] = time.perf_counter() - t0
        if i >= spawners or not out["login_ok"]:
            return out
        t1 = time.perf_counter()
        try:
            r = hub.spawn(user, options=OPTIONS)
            if r.status_code not in (201, 202):
                raise RuntimeError(f"spawn answered {r.status_code}: {r.text[:200]}")
            hub.wait_ready(user, timeout=600)
            out["spawn_ok"] = True
        except Exception as e:  # noqa: BLE001 - counted as a failed spawn
            out["spawn_ok"], out["error"] = False, f"{type(e).__name__}: {str(e)[:300]}"
        out["spawn_s"] = time.perf_counter() - t1
        return out

    with Poller(hub, "alice") as idle:
        time.sleep(5)
    with Poller(hub, "alice") as busy, cf.ThreadPoolExecutor(len(users)) as pool:
        t0 = time.perf_counter()
        rows = list(pool.map(one, range(len(users)), users))
        took = time.perf_counter() - t0
    for row in rows:
        if "error" in row:
            emit(bench="logins_and_spawns", user=row["user"], error=row["error"])
    logins = [r["login_s"] for r in rows]
    spawns = [r["spawn_s"] for r in rows if "spawn_s" in r]
    return {
        "logins": len(users), "spawns": spawners, "cpus": os.cpu_count(), "seconds": round(took, 1),
        "failed_logins": sum(not r["login_ok"] for r in rows),
        "failed_spawns": spawners - sum(bool(r.get("spawn_ok")) for r in rows),
        "login_p50_s": round(pct(logins, 0.5), 2), "login_p99_s": round(pct(logins, 0.99), 2),
        "spawn_p50_s": round(pct(spawns, 0.5), 1), "spawn_max_s": round(max(spawns, default=0), 1),
        "api_idle": idle.figures(), "api_load": busy.figures(),
    }


def token_stampede(hub: Hub, idp: IdP, users: list[str], callers: int) -> dict:
    """`callers` server tokens (spread over `users`) ask for their user's token at one instant."""
    with cf.ThreadPoolExecutor(len(users)) as pool:
        logged = list(pool.map(hub.login, users))
    bad = [u for u, (_, r) in zip(users, logged, strict=True) if r.status_code != 302]
    if bad:
        raise RuntimeError(f"logins failed before the stampede: {bad}")
    tokens = []
    for i in range(callers):
        user = users[i % len(users)]
        r = hub.api("POST", f"/users/{user}/tokens",
                    json={"scopes": ["custom:jhub-cloud:access-token!user"], "expires_in": 3600,
                          "note": "load_bench server token"})
        r.raise_for_status()
        tokens.append((user, r.json()["token"]))
    states = {u: hub.user(u)["auth_state"] for u in users}
    # Wait until every user's access token is within the margin: each needs a refresh now.
    time.sleep(max(0.0, max(s["expires_at"] for s in states.values()) - MARGIN - time.time()) + 0.5)
    barrier = threading.Barrier(callers)

    def call(item: tuple[str, str]) -> tuple[str, float, float, int, str]:
        user, token = item
        s = requests.Session()
        s.trust_env = False
        barrier.wait()
        start = time.time()
        t0 = time.perf_counter()
        try:
            r = s.get(f"{hub.url}/hub/api/jhub-cloud/users/{user}/token",
                      headers={"Authorization": f"token {token}"}, timeout=60)
            status, body = r.status_code, (r.json().get("access_token", "") if r.ok else r.text[:200])
        except requests.RequestException as e:
            status, body = 0, str(e)
        return user, start, time.perf_counter() - t0, status, body

    since = time.time()
    with cf.ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(call, tokens))
    starts = [a[1] for a in answers]
    lat = [a[2] for a in answers]
    ok = [a for a in answers if a[3] == 200]
    for a in answers:
        if a[3] != 200:
            emit(bench="token_stampede", user=a[0], status=a[3], error=a[4])
    new_tokens = {u: {a[4] for a in ok if a[0] == u} for u in users}
    # Each user's callers all got one token, and it is not the one from before the stampede.
    consistent = sum(len(t) == 1 and states[u]["access_token"] not in t for u, t in new_tokens.items())
    time.sleep(0.5)  # the IdP writes its event after answering
    refreshes = {u: idp.refreshes(u, since=since) for u in users}
    return {
        "callers": callers, "users": len(users), "start_spread_s": round(max(starts) - min(starts), 3),
        "answered_200": len(ok), "p50_ms": round(1000 * pct(lat, 0.5), 1),
        "p99_ms": round(1000 * pct(lat, 0.99), 1),
        "users_with_one_new_token": consistent,
        "idp_refreshes_per_user_min": min(refreshes.values()), "idp_refreshes_per_user_max": max(refreshes.values()),
        "idp_refreshes_total": sum(refreshes.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logins", type=int, default=30, help="users logging in at once (default 30)")
    ap.add_argument("--spawns", type=int, default=10, help="of them, servers spawned at once (default 10)")
    ap.add_argument("--callers", type=int, default=100, help="token callers at once (default 100)")
    ap.add_argument("--token-users", type=int, default=20, help="users the callers belong to (default 20)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes to check the script: 3, 2, 5 callers, 2 users")
    ap.add_argument("--no-report", action="store_true", help="do not write the figures to docs/reliability.md")
    ap.add_argument("--parts", default="logins,tokens", help="comma-separated: logins, tokens (default both)")
    args = ap.parse_args()
    if args.quick:
        args.logins, args.spawns, args.callers, args.token_users = 3, 2, 5, 2
    if not 0 < args.spawns <= args.logins or not 0 < args.token_users <= args.callers:
        ap.error("need 0 < --spawns <= --logins and 0 < --token-users <= --callers")
    if os.geteuid() != 0:
        ap.error("run as root: it creates benchmark users and starts servers as them")
    parts = set(args.parts.split(","))
    root = Path("/var/tmp/jhub-cloud-test")
    root.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-load-", dir=root))
    run.chmod(0o755)
    started: list = []
    missed = False
    try:
        pki = make_pki(run / "pki")
        if "logins" in parts:
            users = bench_users(args.logins)
            for u in users[:args.spawns]:
                ensure_os_user(u)
            idp = IdP(pki, run / "idp").start()
            started.append(idp)
            add_idp_users(idp, users)
            hub = CloudHub(idp, run / "hub-load", hub_config="c.Spawner.http_timeout = 300\n"
                                                             "c.Spawner.start_timeout = 600\n")
            hub.start()
            started.append(hub)
            hub.login("alice")  # the poller's target, and a warm-up of the login path
            res = logins_and_spawns(hub, users, args.spawns)
            emit(bench="load.logins-and-spawns", **res)
            missed |= bool(res["failed_logins"] or res["failed_spawns"] or res["api_load"]["errors"])
            if not args.no_report:
                a, i = res["api_load"], res["api_idle"]
                record_measurement("load.logins-and-spawns", (
                    f"{res['logins']} logins + {res['spawns']} spawns at once on {res['cpus']} cores: "
                    f"{res['failed_logins']} failed logins, {res['failed_spawns']} failed spawns; login "
                    f"p50 {res['login_p50_s']} s, p99 {res['login_p99_s']} s; spawn to ready p50 "
                    f"{res['spawn_p50_s']} s, max {res['spawn_max_s']} s; hub API GET /users/<u> under load "
                    f"p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms ({a['requests']} requests, {a['errors']} "
                    f"errors; idle p50 {i['p50_ms']} ms, p99 {i['p99_ms']} ms)"), source=SOURCE)
            hub.stop()
            started.remove(hub)
        if "tokens" in parts:
            tidp = IdP(pki, run / "idp-tokens", at_ttl=AT_TTL).start()
            started.append(tidp)
            tusers = bench_users(args.token_users)
            add_idp_users(tidp, tusers)
            thub = Hub(tidp, run / "hub-tokens", auth={"refresh_margin_seconds": MARGIN, "auth_refresh_age": 1})
            thub.start()
            started.append(thub)
            res = token_stampede(thub, tidp, tusers, args.callers)
            emit(bench="load.token-stampede", **res)
            missed |= bool(res["answered_200"] != res["callers"] or res["idp_refreshes_per_user_max"] != 1
                           or res["idp_refreshes_per_user_min"] != 1 or res["users_with_one_new_token"] != res["users"])
            if not args.no_report:
                record_measurement("load.token-stampede", (
                    f"{res['callers']} callers for {res['users']} users within {res['start_spread_s']} s: "
                    f"{res['answered_200']}/{res['callers']} answered 200, p50 {res['p50_ms']} ms, p99 "
                    f"{res['p99_ms']} ms; IdP refresh grants per user: min {res['idp_refreshes_per_user_min']}, "
                    f"max {res['idp_refreshes_per_user_max']}; {res['users_with_one_new_token']}/{res['users']} "
                    "users' callers all got the same new token"), source=SOURCE)
    finally:
        stop_services(started)
        with contextlib.suppress(OSError):
            unmount_all_under(run)
        shutil.rmtree(run, ignore_errors=True)
    emit(bench="load_bench", targets_met=not missed)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
