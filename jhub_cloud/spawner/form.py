"""The spawn page: what it shows (from the policy's offers) and how its answer is read. Pure.

Field names on the page are `profile` and `<profile>--<choice>` (one select per choice of every
profile offered), so that each profile's choices stay its own; only the chosen profile's fields
are used. The JSON API and `?opt-` query arguments use the plain names of policy.FORM_FIELDS.
Either way the result is a user_options dict {"profile": name, choice: value, ...} that
policy.decide checks again before anything starts. The screening here only gives clearer
messages for hostile input (decide accepts nothing that is not offered anyway).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from ..config.model import CHOICE_NAMES
from ..policy import FORM_FIELDS, Limits, ProfileOffer

MAX_TEXT = 128
MAX_NUMBER = 1e6
# Every value on offer (image names, sizes, numbers, durations) is made of these.
_TEXT_OK = re.compile(r"^[A-Za-z0-9._:/@+-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LABELS = {"image": "Image", "cpu": "CPUs", "memory": "Memory", "gpus": "GPUs",
          "gpu_model": "GPU model", "time_limit": "Time limit"}
SEP = "--"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class Refusal(ValueError):
    """A submission refused before any policy question: the message says what and what to do."""


def screen_value(field: str, value: Any) -> None:
    """Refuse values no offer could ever hold, naming the field and the problem."""
    if isinstance(value, bool) or value is None:
        raise Refusal(f"{field} must be one of the values offered on the page, got {value!r}")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise Refusal(f"{field} must be a finite number, got {value!r}")
        if abs(value) > MAX_NUMBER:
            raise Refusal(f"{field} is far too large; choose one of the values offered on the page")
        if value < 0:
            raise Refusal(f"{field} cannot be negative; choose one of the values offered on the page")
        return
    if isinstance(value, list | tuple):
        raise Refusal(f"{field} must be one value, got {len(value)}; send each field once")
    if not isinstance(value, str):
        raise Refusal(f"{field} must be text or a number, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise Refusal(f"{field} is too long ({len(value)} characters, at most {MAX_TEXT})")
    if _CONTROL.search(value):
        raise Refusal(f"{field} contains a line break or control character; choose a value offered on the page")
    if ".." in value:
        raise Refusal(f"{field} contains '..'; choose a value offered on the page")
    if not _TEXT_OK.match(value):
        bad = "".join(sorted({ch for ch in value if not _TEXT_OK.match(ch)}))
        raise Refusal(
            f"{field} contains characters that are not allowed ({bad!r}); choose a value offered on the page"
        )


def screen_options(options: Any) -> dict:
    """user_options as they come from the REST API (untrusted JSON), screened; a new dict."""
    if not isinstance(options, Mapping):
        raise Refusal("user_options must be an object of named fields")
    out = {}
    for key, value in options.items():
        if key not in FORM_FIELDS:
            shown = key[:40] if isinstance(key, str) else key  # repr() below shows line breaks
            raise Refusal(f"unknown field {shown!r}; the fields are: {', '.join(FORM_FIELDS)}")
        screen_value(key, value)
        out[key] = value
    return out


def parse_form(formdata: Mapping[str, list], offers: Iterable[ProfileOffer]) -> dict:
    """The page's answer (field -> list of str) as user_options for the chosen profile."""
    names = {o.name for o in offers}
    fields: dict[str, str] = {}
    for key, values in formdata.items():
        if key.startswith("_"):  # _xsrf, set by the hub's page
            continue
        # Choice names have no '-', profile names may have '--': split at the last '--'.
        profile, _, choice = key.rpartition(SEP)
        if key != "profile" and (profile not in names or choice not in CHOICE_NAMES):
            raise Refusal(f"unknown form field {key[:40]!r}; reload the page and submit it as shown")
        if not isinstance(values, list) or len(values) != 1:
            n = len(values) if isinstance(values, list) else "?"
            raise Refusal(f"{key} was sent {n} times; send each field once")
        screen_value(key, values[0])
        fields[key] = values[0]
    if "profile" not in fields:
        raise Refusal("choose a profile")
    chosen = fields["profile"]
    if chosen not in names:
        raise Refusal(f"profile {chosen!r} is not offered to you; choose one shown on the page")
    options: dict[str, Any] = {"profile": chosen}
    for key, value in fields.items():
        profile, _, choice = key.rpartition(SEP)
        if profile == chosen and choice:
            options[choice] = value
    return options


def options_from_query(query: Mapping[str, list]) -> dict:
    """`?opt-profile=...&opt-cpu=...` (the hub has stripped `opt-`): plain field names."""
    out = {}
    for key, values in query.items():
        if not isinstance(values, list) or len(values) != 1:
            raise Refusal(f"{key} was sent more than once; send each field once")
        out[key] = values[0]
    return screen_options(out)


def render(offers: list[ProfileOffer], totals: Limits | None, running: int,
           selected: Mapping | None = None, username: str = "") -> str:
    """The HTML placed inside the hub's spawn page form; mount paths shown as `username` gets them."""
    selected = dict(selected or {})
    first = selected.get("profile") if selected.get("profile") in {o.name for o in offers} else None
    first = first or (offers[0].name if offers else None)
    profiles = []
    for offer in offers:
        same = offer.name == selected.get("profile")
        choices = []
        for name, choice in offer.choices.items():
            if name == "gpus" and tuple(choice.options) == (0,):
                continue  # nothing to say about GPUs on a profile without any
            # The last answer (from the page: text such as "2") preselects the same option again.
            last = str(selected.get(name)) if same else None
            current = next((v for v in choice.options if str(v) == last), choice.default)
            choices.append({
                "name": name,
                "field": f"{offer.name}{SEP}{name}",
                "label": LABELS.get(name, name),
                "options": [{"value": str(v), "selected": v == current} for v in choice.options],
                "fixed": len(choice.options) == 1,  # shown as text: nothing to choose, default used
            })
        profiles.append({
            "name": offer.name,
            "display_name": offer.display_name,
            "description": offer.description,
            "backend": offer.backend,
            "checked": offer.name == first,
            "choices": choices,
            "limits": _profile_limits(offer),
            "mounts": [f"{m.expand(username).path} ({'read-only' if m.read_only else 'read-write'})"
                       for m in offer.mounts],
        })
    return _templates.get_template("spawn_form.html").render(
        profiles=profiles, totals=_totals(totals, running), sep=SEP
    )


def _profile_limits(offer: ProfileOffer) -> str:
    limits = getattr(offer, "limits", None)
    if limits is None:
        return ""
    parts = [f"{limits.shown('max_cpu')} CPUs", f"{limits.shown('max_memory')} memory"]
    if limits.max_gpus:
        parts.append(f"{limits.shown('max_gpus')} GPUs")
    return "Each server of this profile: at most " + ", ".join(parts)


def _totals(limits: Limits | None, running: int) -> str:
    if limits is None:
        return ""
    text = (f"All your servers together: at most {limits.max_servers} server(s), "
            f"{limits.shown('max_cpu')} CPUs, {limits.shown('max_memory')} memory")
    if limits.max_gpus:
        text += f", {limits.max_gpus} GPUs"
    return text + f". Running or starting now: {running}."
