"""The OIDC token and the STS keys, renewed ahead of expiry and retried with jittered backoff.
``tick`` never raises: a failed renewal is logged and tried again later."""

from __future__ import annotations

import logging
import time

from .errors import Exit, StsWireError
from .redaction import SECRETS
from .runtime import Runtime, write_private
from .schedule import Lifetime, backoff, iso, retry_delay
from .spec import Spec
from .sts import Keys, assume_role
from .tokens import Token, TokenSource

log = logging.getLogger("sts_wire")

# Failures that heal by themselves: the user need not do anything, only know.
TRANSIENT = (Exit.IDP_UNREACHABLE, Exit.STS_UNREACHABLE)
# A token with less than this left is not used for a new STS call when the IdP cannot renew it.
TOKEN_MIN_LEFT = 10.0
# Once the keys have expired the mounts are stuck: retry at least this often (jittered), so that
# they work again within seconds of the IdP's return.
EXPIRED_RETRY_CAP = 10.0
SELF_HEALING = ("nothing to do: sts-wire keeps trying and renews the keys by itself once that service "
                "answers again; no restart is needed")


# --- token and keys ----------------------------------------------------------------------------
class Credentials:
    """The OIDC token and the STS keys, renewed ahead of expiry, retried with backoff."""

    def __init__(self, source: TokenSource, spec: Spec, runtime: Runtime):
        self.source, self.spec, self.runtime = source, spec, runtime
        self.token: Token | None = None
        self.keys: Keys | None = None
        self.last_renewal: float | None = None
        self.renewals = 0
        self.token_renewals = 0
        self.failures = 0
        self.renewal_failures = 0  # all failed renewals, for the hub's metrics (sts_wire/report.py)
        self.next_try: float = 0.0
        self.token_next_try: float = 0.0
        self.last_error: StsWireError | None = None

    # token
    def _token_due(self, now: float) -> bool:
        t = self.token
        if t is None:
            return True
        if self.source.changed():
            return True
        if t.expires_at is None or now < self.token_next_try:
            return False
        return now >= Lifetime(t.obtained_at, t.expires_at).renew_at(max_lead=300)

    def _fresh_token(self, now: float) -> Token:
        if self._token_due(now):
            old = self.token
            try:
                tok = self.source.fetch()
            except StsWireError as e:
                if not self._can_wait(old, e, now):
                    raise
                # The IdP is out but the current token still works: the keys can still be renewed
                # with it, so use it and ask the IdP again soon.
                left = old.expires_at - now
                self.token_next_try = now + max(1.0, min(10.0, (left - TOKEN_MIN_LEFT) / 3))
                log.warning("cannot renew the token (%s); using the current one, valid for %d s more",
                            e.message, int(left))
                return old
            SECRETS.add(tok.access_token, tok.refresh_token)
            if old is not None and tok.access_token == old.access_token:
                # The source has nothing newer yet (the hub refreshes on its own schedule, a
                # token file is rewritten by someone else): ask again later, not at every tick.
                left = (old.expires_at - now) if old.expires_at else 60.0
                self.token_next_try = now + max(5.0, min(30.0, left / 4))
                log.debug("no newer token yet from %s; asking again in %.0f s", self.source.describe(),
                          self.token_next_try - now)
                return old
            self.token, self.token_next_try = tok, 0.0
            if old is not None:
                self.token_renewals += 1
            log.info("token from %s%s", self.source.describe(),
                     f", valid until {iso(tok.expires_at)}" if tok.expires_at else "")
        return self.token

    @staticmethod
    def _can_wait(old: Token | None, err: StsWireError, now: float) -> bool:
        """A transient failure while the current token is still good for an STS call."""
        return (old is not None and err.code in TRANSIENT and old.expires_at is not None
                and old.expires_at - now > TOKEN_MIN_LEFT)

    # keys
    def keys_due(self, now: float) -> bool:
        k = self.keys
        return k is None or now >= Lifetime(k.obtained_at, k.expires_at).renew_at()

    def renew_keys(self, now: float | None = None) -> Keys:
        now = time.time() if now is None else now
        tok = self._fresh_token(now)
        keys = assume_role(self.spec.sts, tok.access_token, now)
        SECRETS.add(keys.secret_access_key, keys.session_token)
        life = Lifetime(keys.obtained_at, keys.expires_at)
        write_private(self.runtime.keys_file, keys.process_json(life.reported_expiry()))
        first = self.keys is None
        self.keys = keys
        self.last_renewal = now
        if not first:
            self.renewals += 1
        log.info("S3 keys %s (access key %s...), valid until %s, next renewal at %s",
                 "obtained" if first else "renewed", keys.access_key_id[:4], iso(keys.expires_at),
                 iso(life.renew_at()))
        return keys

    def start(self) -> Keys:
        return self.renew_keys()

    def tick(self, now: float) -> bool:
        """Renew what is due; never raises. Returns True when keys changed."""
        if now < self.next_try:
            return False
        try:
            if self.keys_due(now):
                self.renew_keys(now)
                changed = True
            else:
                if self._token_due(now) and self.token is not None:
                    self._fresh_token(now)
                changed = False
        except StsWireError as e:
            self.failures += 1
            self.renewal_failures += 1
            deadline = self.keys.expires_at if self.keys else None
            expired = deadline is not None and deadline <= now
            delay = retry_delay(self.failures - 1, now, deadline, cap=EXPIRED_RETRY_CAP if expired else 30.0)
            self.next_try = now + delay
            if e.code in TRANSIENT and not e.hint:
                e.hint = SELF_HEALING
            self.last_error = e
            left = f"; keys still valid for {int(deadline - now)} s" if deadline and deadline > now else ""
            log.warning("renewal failed (%s)%s; retrying in %.0f s", e.message, left, delay)
            return False
        except Exception as e:  # noqa: BLE001 - a bug must not stop the renewals
            self.failures += 1
            self.renewal_failures += 1
            self.next_try = now + backoff(self.failures - 1, 1, 30)
            log.exception("renewal failed unexpectedly: %s", type(e).__name__)
            return False
        self.failures = 0
        self.last_error = None
        return changed

    def worth_telling(self, now: float) -> bool:
        """Whether the user should learn of the last failure now (a note beside each folder): at
        once when they must act (log in again), else once the keys themselves can no longer be
        renewed (a short blip of the IdP while the keys are young is not worth a note)."""
        err = self.last_error
        if err is None or self.keys is None:
            return False
        return err.code not in TRANSIENT or self.keys_due(now)

    def next_due(self) -> float:
        cands = [self.next_try]
        if self.keys:
            cands.append(Lifetime(self.keys.obtained_at, self.keys.expires_at).renew_at())
        return max(cands)

    def state(self) -> dict:
        return {"token_source": self.source.describe(),
                "token_expires": iso(self.token.expires_at) if self.token else None,
                "keys_expire": iso(self.keys.expires_at) if self.keys else None,
                "access_key": (self.keys.access_key_id[:4] + "...") if self.keys else None,
                "last_renewal": iso(self.last_renewal), "key_renewals": self.renewals,
                "token_renewals": self.token_renewals, "renewal_failures": self.renewal_failures,
                "last_error": self.last_error.message if self.last_error else None,
                "last_error_hint": self.last_error.hint if self.last_error else None}
