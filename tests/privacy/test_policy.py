"""The privacy policy on its own: configuration, keyed hashing at decode, redaction of what is
refused, references built without the policy refused. No broker, no monitor."""

from __future__ import annotations

import base64
import hashlib
import json

import orjson
import pytest

from monitor.contracts.batch import decode_batch
from monitor.contracts.config import ConfigError, FeatureType, MonitorConfig, load_config
from monitor.contracts.deadletter import DeadLetter, DeadLetterReason, DeadLetterSource, Redaction
from monitor.contracts.privacy import PII_KEY_ENV, PSEUDONYM, REDACTED, PrivacyPolicy
from monitor.contracts.validation import InvalidEvent
from monitor.stream.intake import read_outcomes, read_predictions

KEY = "0123456789abcdef" * 4
PLANTED = "ada.PLANTED@example.com"
MARKED = {"model_id": "fraud", "features": {"email": {"pii": "hash"}, "ssn": {"pii": "drop"}}}


def _config(*models: dict) -> MonitorConfig:
    return MonitorConfig.model_validate({"models": list(models or [MARKED])})


def _policy(key: str = KEY, config: MonitorConfig | None = None) -> PrivacyPolicy:
    return PrivacyPolicy.from_config(config or _config(), {PII_KEY_ENV: key})


def _event(i: int = 0, model_id: str = "fraud", **features) -> dict:
    return {
        "model_id": model_id,
        "prediction_id": f"p{i}",
        "timestamp": "2024-01-01T00:00:00Z",
        "features": {"email": PLANTED, "ssn": "078-05-1120", "amount": 12.5, **features},
        "prediction": 1,
    }


def _raw(event: dict) -> bytes:
    return json.dumps(event).encode()


# -- configuration -------------------------------------------------------------------------------


def test_a_hashed_feature_is_categorical_and_a_dropped_one_never_reaches_the_monitor():
    config = _config({**MARKED, "features": {**MARKED["features"], "amount": {"type": "numeric"}}})
    declared = config.models[0].features
    assert declared["email"].type is FeatureType.categorical
    assert declared["ssn"].type is None
    assert set(config.model("fraud").features) == {"email", "amount"}


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("{salary: {type: numeric, pii: hash}}", "models.0.features.salary: value error, pii: hash on a numeric"),
        ("{email: {pii: encrypt}}", "models.0.features.email.pii: input should be 'hash' or 'drop'"),
        ("{email: {}}", "models.0.features.email: value error, a feature needs a `type`, a `pii` marking"),
    ],
)
def test_a_bad_marking_fails_at_load_naming_the_feature(tmp_path, features, message):
    path = tmp_path / "driftline.yaml"
    path.write_text(f"models:\n  - model_id: fraud\n    features: {features}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_hash_without_a_key_is_a_startup_error_naming_the_variable():
    with pytest.raises(ConfigError, match=f"model 'fraud': email.*{PII_KEY_ENV} is not set"):
        PrivacyPolicy.from_config(_config(), {})
    with pytest.raises(ConfigError, match=f"{PII_KEY_ENV} is 8 characters long"):
        PrivacyPolicy.from_config(_config(), {PII_KEY_ENV: "short-k!"})


def test_drop_alone_needs_no_key_and_no_marking_makes_an_inactive_policy():
    dropped = PrivacyPolicy.from_config(_config({"model_id": "fraud", "features": {"ssn": {"pii": "drop"}}}), {})
    assert dropped.active
    inactive = PrivacyPolicy.from_config(MonitorConfig(), {})
    assert not inactive.active
    raw, error = b"not json", InvalidEvent(DeadLetterReason.undecodable, "event: x")
    assert inactive.refusal(raw, error) == (raw, error)
    assert inactive.refusal(raw, error)[0] is raw


def test_the_key_is_in_no_message_or_repr():
    policy = _policy()
    assert KEY not in repr(policy) and KEY not in str(vars(policy).get("marks"))
    with pytest.raises(ConfigError) as caught:
        PrivacyPolicy.from_config(_config(), {PII_KEY_ENV: KEY[:20]})
    assert KEY[:20] not in str(caught.value)


# -- decode ----------------------------------------------------------------------------------------


def test_decode_hashes_and_drops_the_marked_features_of_marked_models_only():
    policy = _policy()
    raws = [_raw(_event(0)), _raw(_event(1, model_id="other")), _raw(_event(2, email=None)), _raw(_event(3, email=7))]
    batch = decode_batch(raws, range(4), privacy=policy).predictions
    first, other, null, number = batch.features
    assert set(first) == {"email", "amount"} and PSEUDONYM.fullmatch(first["email"])
    assert first["amount"] == 12.5
    assert other == _event(1)["features"]  # a model that marks nothing keeps every feature
    assert null["email"] is None and "ssn" not in null  # missing stays missing: null rates still work
    assert number["email"] == policy.pseudonym("email", "7")  # a category is compared as text
    assert batch.column("email")[0] == first["email"]


def test_the_slow_path_applies_the_policy_too():
    event = {**_event(0), "unknown_top_level": 1, "timestamp": "2024-01-01T00:00:00.1234567Z"}  # pydantic's path
    batch = decode_batch([_raw(event)], [0], privacy=_policy()).predictions
    assert len(batch) == 1 and set(batch.features[0]) == {"email", "amount"}
    assert PSEUDONYM.fullmatch(batch.features[0]["email"])


def test_pseudonyms_are_stable_keyed_and_separate_per_feature():
    policy = _policy()
    same = policy.pseudonym("email", PLANTED)
    assert same == _policy().pseudonym("email", PLANTED)
    assert same != _policy(key=KEY[::-1]).pseudonym("email", PLANTED)  # another key: other pseudonyms
    assert same != policy.pseudonym("login", PLANTED)
    assert policy.pseudonym("flag", True) == policy.pseudonym("flag", "true")
    assert PLANTED not in same and len(same) == len("hash:") + 16


def test_without_a_policy_decode_keeps_every_feature():
    batch = decode_batch([_raw(_event(0))], [0]).predictions
    assert batch.features[0] == _event(0)["features"]


# -- what is refused -------------------------------------------------------------------------------


def _letter(original: bytes, error: InvalidEvent) -> DeadLetter:
    return DeadLetter.of(original, DeadLetterSource(file="f", line=0), error.reason, str(error))


def test_a_refused_event_of_a_marked_model_keeps_its_bytes_redacted_and_no_quoted_value():
    policy = _policy()
    bad = _raw({**_event(0, email={"nested": PLANTED}), "prediction": None})
    decoded = decode_batch([bad], [0], privacy=policy)
    ((_, error),) = decoded.rejected
    assert PLANTED in str(error)  # pydantic quotes the value...
    original, error = policy.refusal(bad, error)
    letter = _letter(original, error)
    assert PLANTED not in str(error) and "features.email" in str(error)  # ...the dead letter does not
    assert letter.redaction is Redaction.redacted
    assert letter.redacted_fields == ["features.email", "features.ssn"]
    assert letter.original_bytes == len(bad) and letter.original_sha256 == hashlib.sha256(bad).hexdigest()
    kept = orjson.loads(letter.original())
    assert kept["features"] == {"email": REDACTED, "ssn": REDACTED, "amount": 12.5}  # not a category: redacted
    assert "078-05-1120" not in letter.model_dump_json() and PLANTED not in letter.model_dump_json()


def test_a_hashed_value_in_a_dead_letter_is_its_pseudonym():
    policy = _policy()
    bad = _raw({**_event(0), "prediction": None})
    ((_, error),) = decode_batch([bad], [0], privacy=policy).rejected
    kept = orjson.loads(bytes(policy.refusal(bad, error)[0]))
    assert kept["features"]["email"] == policy.pseudonym("email", PLANTED)
    assert kept["features"]["ssn"] == REDACTED


def test_unparseable_input_is_withheld_and_other_models_keep_their_bytes():
    policy = _policy()
    garbage = b"\xff" + PLANTED.encode()
    original, _ = policy.refusal(garbage, InvalidEvent(DeadLetterReason.undecodable, "event: not JSON"))
    letter = _letter(original, InvalidEvent(DeadLetterReason.undecodable, "event: not JSON"))
    assert letter.original() == b"" and letter.redaction is Redaction.withheld
    assert letter.original_bytes == len(garbage) and letter.redacted_fields is None

    unmarked = _raw({**_event(0, model_id="other"), "prediction": None})
    error = InvalidEvent(DeadLetterReason.schema, f"prediction: ..., got {PLANTED!r}")
    original, same_error = policy.refusal(unmarked, error)
    assert original is unmarked and same_error is error
    assert _letter(original, error).redaction is None and _letter(original, error).original() == unmarked


def test_an_event_naming_no_model_is_redacted_of_every_marked_name():
    policy = _policy(config=_config(MARKED, {"model_id": "churn", "features": {"phone": {"pii": "drop"}}}))
    anonymous = _raw({"features": {"email": PLANTED, "phone": "+44 20 7946 0958", "amount": 1.0}})
    kept = orjson.loads(bytes(policy.redact(anonymous)))
    assert kept["features"] == {"email": REDACTED, "phone": REDACTED, "amount": 1.0}
    listed = _raw({"model_id": "fraud", "features": [PLANTED]})
    assert orjson.loads(bytes(policy.redact(listed)))["features"] == REDACTED


def test_intake_redacts_an_envelopes_bad_event_and_a_bad_envelope_whole():
    policy = _policy()

    def message(offset: int, value: bytes):
        from types import SimpleNamespace

        return SimpleNamespace(topic="predictions", partition=0, offset=offset, key=b"fraud", value=value)

    good, bad = _event(0), {**_event(1, email=["x", PLANTED]), "prediction": None}
    envelope = json.dumps({"batch_version": 1, "events": [good, bad]}).encode()
    bad_envelope = json.dumps({"batch_version": 7, "events": [good]}).encode()
    intake = read_predictions([message(5, envelope), message(6, bad_envelope), message(7, b"{" + PLANTED.encode())],
                              privacy=policy)  # fmt: skip
    assert intake.batch.prediction_ids.tolist() == ["p0"]
    assert PSEUDONYM.fullmatch(intake.batch.features[0]["email"]) and "ssn" not in intake.batch.features[0]
    by_offset = {item.message.offset: item for item in intake.refused}
    letters = {offset: _letter(item.original, item.error) for offset, item in by_offset.items()}
    assert by_offset[5].index == 1 and letters[5].redacted_fields == ["features.email", "features.ssn"]
    assert letters[6].redacted_fields == ["events.0.features.email", "events.0.features.ssn"]
    assert letters[7].redaction is Redaction.withheld
    for offset, letter in letters.items():
        text = letter.model_dump_json() + base64.b64decode(letter.original_b64).decode(errors="replace")
        assert PLANTED not in text and "078-05-1120" not in text, offset
        assert PLANTED not in str(by_offset[offset].error)

    misrouted = read_outcomes([message(8, _raw(_event(2)))], privacy=policy)  # a prediction on the outcomes topic
    (refused,) = misrouted.refused
    assert PLANTED not in refused.original.decode() and PLANTED not in str(refused.error)


# -- references ------------------------------------------------------------------------------------


def _profile(tmp_path, categories: list[str], with_ssn: bool = False):
    features = {"email": {"type": "categorical", "stats": {}, "categories": categories}}
    if with_ssn:
        features["ssn"] = {"type": "categorical", "stats": {}, "categories": ["078-05-1120"]}
    path = tmp_path / "ref.json"
    path.write_bytes(orjson.dumps({"features": features, "sample": {"email": categories}}))
    return path


def test_a_reference_built_without_the_policy_is_refused_at_start(tmp_path):
    policy = _policy()
    hashed = [policy.pseudonym("email", f"user{i}@example.com") for i in range(3)]

    def config_with(path):
        return _config({**MARKED, "reference": str(path)})

    PrivacyPolicy.from_config(config_with(_profile(tmp_path, hashed)), {PII_KEY_ENV: KEY})
    with pytest.raises(ConfigError, match="raw values of the feature 'email' marked pii: hash"):
        PrivacyPolicy.from_config(config_with(_profile(tmp_path, [PLANTED])), {PII_KEY_ENV: KEY})
    with pytest.raises(ConfigError, match="holds the feature 'ssn' marked pii: drop"):
        PrivacyPolicy.from_config(config_with(_profile(tmp_path, hashed, with_ssn=True)), {PII_KEY_ENV: KEY})
    rebuilding = config_with(_profile(tmp_path, [PLANTED]))
    assert PrivacyPolicy.from_config(rebuilding, {PII_KEY_ENV: KEY}, references=False).active


def test_a_training_row_is_kept_as_the_monitor_keeps_an_event():
    policy = _policy()
    row = {"email": PLANTED, "ssn": "078-05-1120", "amount": 1.0}
    assert policy.features("fraud", row) == {"email": policy.pseudonym("email", PLANTED), "amount": 1.0}
    assert row["email"] == PLANTED  # the caller's row is left alone
    assert policy.features("other", row) == row
