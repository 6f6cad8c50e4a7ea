"""Start a notebook server inside a Slurm job: pick a free port on the node, report it to the
hub, then exec the server command with that port in JUPYTERHUB_SERVICE_URL.

    python -m jhub_cloud.spawner.slurm_singleuser CMD [ARGS...]

Like batchspawner-singleuser (same endpoint, same body), with one difference: when the hub does
not take the report (e.g. it restarted while the job waited in the queue and no longer knows
this start), the job ends at once instead of running a server nobody can reach until its time
limit.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse, urlunparse

EXIT_REFUSED = 75  # EX_TEMPFAIL: the hub did not take this job's server


def report_port(port: int) -> tuple[int, str]:
    """POST {"port": port} to the hub with the server's token; (HTTP status, message)."""
    import requests
    from jupyterhub.services.auth import HubAuth
    from jupyterhub.utils import url_path_join

    auth = HubAuth()
    kwargs = {}
    if auth.certfile and auth.keyfile:
        kwargs["cert"] = (auth.certfile, auth.keyfile)
    if auth.client_ca:
        kwargs["verify"] = auth.client_ca
    try:
        r = requests.post(url_path_join(auth.api_url, "batchspawner"), json={"port": port}, timeout=60,
                          headers={"Authorization": f"token {auth.api_token}"}, **kwargs)
    except requests.RequestException as e:
        return 0, f"cannot reach the hub: {e}"
    try:
        message = r.json().get("message", "")
    except ValueError:
        message = r.text[:200]
    return r.status_code, message


def with_port(service_url: str, port: int) -> str:
    url = urlparse(service_url)
    return urlunparse(url._replace(netloc=f"{url.hostname}:{port}"))


def main(argv: list[str] | None = None) -> int:
    from jupyterhub.utils import random_port

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m jhub_cloud.spawner.slurm_singleuser CMD [ARGS...]", file=sys.stderr)
        return 2
    port = random_port()
    status, message = report_port(port)
    if status != 201:
        print(f"jhub-cloud: the hub did not take this job's port ({status or 'no answer'}: {message}); "
              "ending the job", file=sys.stderr)
        return EXIT_REFUSED
    os.environ["JUPYTERHUB_SERVICE_URL"] = with_port(os.environ["JUPYTERHUB_SERVICE_URL"], port)
    os.execvp(argv[0], argv)  # noqa: S606 (the server command, as the job was told to run it)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
