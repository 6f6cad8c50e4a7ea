"""``sts-wire check``: reach the IdP and the STS, list what each mount would show, check FUSE,
rclone and the mount paths; report every problem. Changes nothing."""

from __future__ import annotations

import json
import logging
import sys

from .. import mounts as fs
from .. import spec as specmod
from ..app import allowed_roots, find_rclone, load_doc, pick_user, rclone_version
from ..errors import SpecError, StsWireError
from ..redaction import SECRETS
from ..schedule import iso
from ..tokens import make_source


def cmd_check(args) -> int:
    results: list[dict] = []
    out = sys.stdout

    def report(step: str, ok: bool, text: str, err: StsWireError | None = None) -> None:
        r = {"step": step, "ok": ok, "message": text}
        if err is not None:
            r["code"] = int(err.code)
            r["exit_name"] = err.code.name
            if err.hint:
                r["hint"] = err.hint
        results.append(r)
        if not args.json:
            print(f"{'ok  ' if ok else 'FAIL'}  {step:<22} {text}", file=out)
            if err is not None and err.hint:
                print(f"      {'':<22} hint: {err.hint}", file=out)

    def done() -> int:
        bad = [r for r in results if not r["ok"]]
        code = bad[0]["code"] if bad else 0
        if args.json:
            print(json.dumps({"ok": not bad, "exit_code": code, "results": results}, indent=1), file=out)
        else:
            print(f"\n{len(bad)} problem{'s' if len(bad) != 1 else ''} found" if bad else "\nall good", file=out)
        return code

    logging.getLogger("sts_wire").addHandler(logging.NullHandler())
    logging.getLogger("sts_wire").propagate = False
    try:
        doc, lines = load_doc(args)
        spec = specmod.parse(doc, f"mount spec {args.spec}", lines)
        roots = allowed_roots(args)
        source = make_source(spec.token, allow_plain_http=spec.allow_plain_http)
    except StsWireError as e:
        report("spec", False, str(e.message).replace("\n", " "), e)
        return done()
    report("spec", True, f"{len(spec.mounts)} mount{'s' if len(spec.mounts) != 1 else ''}, token from "
                         f"{source.describe()}")
    try:
        binary = find_rclone(args.rclone)
        report("rclone", True, f"{rclone_version(binary)} at {binary}")
    except StsWireError as e:
        report("rclone", False, e.message, e)
    try:
        fs.check_fuse()
        report("fuse", True, "/dev/fuse and fusermount3 present")
    except StsWireError as e:
        report("fuse", False, e.message, e)
    token = None
    try:
        token = source.fetch()
        SECRETS.add(token.access_token, token.refresh_token)
        left = token.remaining()
        extra = ""
        if spec.token.issuer:
            from ..idp import default_verify, verified_claims

            claims = verified_claims(token.access_token, spec.token.issuer, default_verify(spec.token.ca_file),
                                     spec.token.audience)
            groups = claims.get("groups") or claims.get("wlcg.groups") or []
            extra = f", signature verified, groups: {' '.join(map(str, groups)) or '-'}"
        report("token", True, f"user {token.user or '?'}"
               + (f", expires in {int(left)} s" if left is not None else "") + extra)
    except StsWireError as e:
        report("token", False, e.message, e)
    user = pick_user(spec, token.user if token else None)
    try:
        spec = specmod.resolve(spec, user, roots)
    except SpecError as e:
        report("mount paths", False, "; ".join(e.problems), e)
        return done()
    keys = None
    if token is not None:
        from ..sts import assume_role, probe_bucket, s3_client

        try:
            keys = assume_role(spec.sts, token.access_token)
            SECRETS.add(keys.secret_access_key, keys.session_token)
            report("sts", True, f"keys for role {spec.sts.role_arn or '(none)'} valid until {iso(keys.expires_at)}")
        except StsWireError as e:
            report("sts", False, e.message, e)
        if keys is not None:
            client = s3_client(spec.sts, keys)
            for m in spec.mounts:
                try:
                    names = probe_bucket(client, m.bucket, m.prefix, 20)
                    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                    report(f"bucket {m.remote}", True, f"{len(names)}{'+' if len(names) >= 20 else ''} "
                                                       f"entries{': ' + shown if names else ' (empty)'}")
                except StsWireError as e:
                    report(f"bucket {m.remote}", False, e.message, e)
    for m in spec.mounts:
        try:
            notes = fs.prepare_path(m.path, roots, dry_run=True)
            report(f"path {m.path}", True, "; ".join(notes) or "free and empty")
        except StsWireError as e:
            report(f"path {m.path}", False, e.message, e)
    return done()
