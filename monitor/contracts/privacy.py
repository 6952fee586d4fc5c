"""Privacy by design: features marked `pii` in the configuration never reach a store raw.

A model's feature may be marked `pii: hash` or `pii: drop` (`config.Pii`). The policy is applied
once, where events become columns (`batch.decode_batch`, called by the worker's `intake` and by
`replay`), so everything downstream (states and their changelogs, the reference built in warm-up,
window sketches and category counts, alerts and their evidence, explain pages, metrics, logs)
only ever sees what the policy let through:

- `drop`: the feature is removed from the event; it is never monitored. Its attribution (the
  event's `attributions`, e.g. its SHAP value) is removed too: a number, not the value, but it
  says how much the value moved the prediction, and nothing about a dropped feature is kept.
- `hash`: its value is replaced by a pseudonym, `hash:` and the first 16 hex digits of
  HMAC-SHA256(key, feature name, NUL, the value as text), so the category's drift is still
  monitored, by pseudonym. The key comes from the environment only (`DRIFTLINE_PII_KEY`, at least
  32 characters); a configuration with `pii: hash` and no key stops at start naming the
  variable. Nulls stay nulls (null-rate checks still work). Its attribution is kept under the
  feature's name: a number in the prediction's units, which names no value.

Dead letters (`refusal`) keep an input's bytes only where no marked feature can be in them (an
event of a model that marks none); otherwise the input is re-encoded with the marked features'
values replaced (`Redaction.redacted`), or, when it cannot be parsed, kept without bytes
(`Redaction.withheld`: size, digest, reason and source only); the reason names fields but
quotes no value.

>>> config = MonitorConfig.model_validate(
...     {"models": [{"model_id": "fraud", "features": {"email": {"pii": "hash"}, "ssn": {"pii": "drop"}}}]})
>>> policy = PrivacyPolicy.from_config(config, {PII_KEY_ENV: "k" * 32})
>>> from monitor.contracts.batch import decode_batch
>>> raw = (b'{"model_id": "fraud", "prediction_id": "p1", "timestamp": "2024-01-01T00:00:00Z",'
...        b' "features": {"email": "ada@example.com", "ssn": "078-05-1120", "amount": 3.5}, "prediction": 1}')
>>> decode_batch([raw], [0], privacy=policy).predictions.features[0]
{'email': 'hash:8eb47abceba007ca', 'amount': 3.5}
>>> PrivacyPolicy.from_config(config, {})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
monitor.contracts.config.ConfigError: pii: hash is configured (model 'fraud': email) but DRIFTLINE_PII_KEY...
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from monitor.contracts.config import ConfigError, MonitorConfig, Pii
from monitor.contracts.deadletter import RedactedOriginal, Redaction
from monitor.contracts.validation import InvalidEvent

PII_KEY_ENV = "DRIFTLINE_PII_KEY"
"""The environment variable holding the key of `pii: hash`; never in a file, never logged."""
MIN_KEY_LENGTH = 32
"""Characters the key needs at least (`openssl rand -hex 32` gives 64)."""
HASH_PREFIX = "hash:"
HASH_DIGITS = 16
"""Hex digits of the HMAC kept: 64 bits, no collision among the categories a feature keeps."""
PSEUDONYM = re.compile(f"{HASH_PREFIX}[0-9a-f]{{{HASH_DIGITS}}}")
REDACTED = "[redacted]"
"""What a dead letter holds in place of a dropped feature's value (or a value not a category)."""
_CACHE_SIZE = 65_536
"""Pseudonyms remembered per feature (a hostile stream of distinct values cannot grow it)."""


class PrivacyPolicy:
    """The `pii` markings of a configuration and the key: what to remove from events, and how.

    Build it once at start (`from_config`: refuses a `pii: hash` without a key); `active` is
    False when nothing is marked, and then nothing costs anything."""

    def __init__(self, marks: Mapping[str, Mapping[str, Pii]], key: bytes | None = None):
        self.marks = {model: dict(features) for model, features in marks.items() if features}
        """Model id -> feature name -> marking, for models that mark features."""
        if key is None and any(Pii.hash in features.values() for features in self.marks.values()):
            raise ValueError("pii: hash needs a key")
        self._key = key
        self._rules = {
            model: (
                tuple(name for name, mark in features.items() if mark is Pii.drop),
                tuple(name for name, mark in features.items() if mark is Pii.hash),
            )
            for model, features in self.marks.items()
        }
        self._any_name = sorted({name for features in self.marks.values() for name in features})
        """Every marked name: what an event of an unknown model is redacted of."""
        self._cache: dict[str, dict[str, str]] = {}

    @property
    def active(self) -> bool:
        return bool(self.marks)

    def __repr__(self) -> str:  # never the key
        return f"PrivacyPolicy({self.marks!r})"

    @classmethod
    def from_config(
        cls, config: MonitorConfig, environ: Mapping[str, str] | None = None, *, references: bool = True
    ) -> PrivacyPolicy:
        """The policy of `config`, with the key from `environ` (the process environment by
        default). A `ConfigError` names what is wrong: no key, a short key, or (unless not
        `references`: `driftline reference` rebuilding one) a configured reference profile that
        holds raw values of a marked feature."""
        environ = os.environ if environ is None else environ
        marks = {
            model.model_id: {name: spec.pii for name, spec in model.features.items() if spec.pii is not None}
            for model in config.models
        }
        hashed = [
            f"model {model!r}: {', '.join(n for n, m in features.items() if m is Pii.hash)}"
            for model, features in marks.items()
            if Pii.hash in features.values()
        ]
        key = None
        if hashed:
            text = environ.get(PII_KEY_ENV, "")
            if not text:
                raise ConfigError(
                    f"pii: hash is configured ({'; '.join(hashed)}) but {PII_KEY_ENV} is not set: set it to a secret"
                    f" of at least {MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 32`), the same on every"
                    " worker and for `driftline reference` (runbooks/README.md, Privacy)"
                )
            if len(text) < MIN_KEY_LENGTH:
                raise ConfigError(
                    f"{PII_KEY_ENV} is {len(text)} characters long; a key for pii: hash needs at least"
                    f" {MIN_KEY_LENGTH} (e.g. `openssl rand -hex 32`)"
                )
            key = text.encode()
        policy = cls(marks, key)
        for model in config.models if references else ():
            if model.reference is not None and policy.marks.get(model.model_id):
                policy.check_reference(model.model_id, model.reference)
        return policy

    # -- events ------------------------------------------------------------------------------------

    def pseudonym(self, feature: str, value: Any) -> str:
        """The keyed hash that stands for `value` of `feature` (a category as text: `True` is
        "true", `3` is "3", as the monitor compares categories)."""
        if type(value) is not str:
            value = ("true" if value else "false") if isinstance(value, bool) else str(value)
        cache = self._cache.get(feature)
        if cache is None:
            cache = self._cache[feature] = {}
        found = cache.get(value)
        if found is None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            assert self._key is not None
            message = feature.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
            digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
            found = cache[value] = HASH_PREFIX + digest[:HASH_DIGITS]
        return found

    def apply(self, model_ids: Any, features: Any, attributions: Any = None) -> None:
        """Remove the marked features of each event in place: `features[i]` (a dict) is an event
        of `model_ids[i]`, and `attributions[i]` its attributions (a dict or None), which lose
        the dropped features. Called on every decoded batch when `active`."""
        rules = self._rules
        pseudonym = self.pseudonym
        if attributions is None:
            attributions = [None] * len(features)
        for model_id, values, attributed in zip(model_ids, features, attributions, strict=True):
            rule = rules.get(model_id)
            if rule is None:
                continue
            dropped, hashed = rule
            for name in dropped:
                values.pop(name, None)
                if attributed:
                    attributed.pop(name, None)
            for name in hashed:
                value = values.get(name)
                if value is not None:
                    values[name] = pseudonym(name, value)

    def features(self, model_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """One event's (or training row's) features as the monitor may keep them."""
        kept = dict(values)
        self.apply([model_id], [kept])
        return kept

    # -- dead letters ------------------------------------------------------------------------------

    def refusal(self, original: bytes, error: InvalidEvent) -> tuple[bytes, InvalidEvent]:
        """What a dead letter and a log line may say of a refused input: its bytes (unchanged
        when no marked feature can be in them, else a `RedactedOriginal`) and the error (without
        quoted values when the input could hold marked features)."""
        if not self.active:
            return original, error
        kept = self.redact(original)
        if kept is original:
            return original, error
        return kept, InvalidEvent(error.reason, error.without_values)

    def redact(self, original: bytes) -> bytes:
        """`original` itself when no marked feature can be in it; otherwise a `RedactedOriginal`:
        the JSON re-encoded with the marked values replaced, or no bytes when it cannot be read.

        Every object with `features`, at any depth (an event, an envelope's events), is redacted
        of its model's marked features; of every marked name when it names no model of its own."""
        try:
            data = orjson.loads(original)
        except (orjson.JSONDecodeError, TypeError):
            return RedactedOriginal(b"", original, Redaction.withheld)
        fields: list[str] = []
        stack: list[tuple[Any, str]] = [(data, "")]
        while stack:  # no recursion: orjson reads nesting 1,024 deep, deeper than Python recurses
            node, path = stack.pop()
            if isinstance(node, dict):
                if "features" in node:
                    self._redact_event(node, path, fields)
                stack.extend((value, f"{path}{key}.") for key, value in node.items() if isinstance(value, dict | list))
            elif isinstance(node, list):
                stack.extend((value, f"{path}{i}.") for i, value in enumerate(node) if isinstance(value, dict | list))
        if not fields:
            return original
        return RedactedOriginal(orjson.dumps(data), original, Redaction.redacted, tuple(sorted(fields)))

    def _redact_event(self, event: dict[str, Any], path: str, fields: list[str]) -> None:
        """Replace the marked features' values of one event (changed in place), noting their paths
        in `fields`. An event without a model id of its own is redacted of every marked name."""
        model_id = event.get("model_id")
        if isinstance(model_id, str):
            marks = self.marks.get(model_id)
            if marks is None:
                return
        else:
            marks = dict.fromkeys(self._any_name, Pii.drop)
        attributed = event.get("attributions")
        if isinstance(attributed, dict):
            for name, mark in marks.items():
                if mark is Pii.drop and name in attributed:
                    attributed[name] = REDACTED
                    fields.append(f"{path}attributions.{name}")
        values = event["features"]
        if not isinstance(values, dict):
            if values is not None and not isinstance(values, bool | int | float):
                event["features"] = REDACTED  # a list or a text in place of the features: nothing to single out
                fields.append(f"{path}features")
            return
        for name, mark in marks.items():
            value = values.get(name)
            if value is not None:
                scalar = isinstance(value, str | bool | int | float)
                values[name] = self.pseudonym(name, value) if mark is Pii.hash and scalar else REDACTED
                fields.append(f"{path}features.{name}")

    # -- references --------------------------------------------------------------------------------

    def check_reference(self, model_id: str, path: Path) -> None:
        """Refuse a reference profile (`driftline reference`'s JSON) that holds a dropped feature,
        or raw values of a hashed one: it was built without this policy, and would put those
        values in the model's state, its alerts and its explain pages."""
        marks = self.marks.get(model_id, {})
        try:
            profile = orjson.loads(Path(path).read_bytes())
            features = profile["features"]
            sample = profile.get("sample", {})
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            return  # unreadable: loading it fails later with its own message
        for name, mark in marks.items():
            if name not in features:
                continue
            if mark is Pii.drop:
                raw = True
            else:
                values = [*features[name].get("categories", []), *sample.get(name, [])]
                raw = any(value is not None and not PSEUDONYM.fullmatch(str(value)) for value in values)
            if raw:
                raise ConfigError(
                    f"model {model_id!r}: reference {path} holds {'the' if mark is Pii.drop else 'raw values of the'}"
                    f" feature {name!r} marked pii: {mark.value}; rebuild it with `driftline reference --config ...`"
                    f" (and {PII_KEY_ENV} set), which applies the markings (runbooks/README.md, Privacy)"
                )
