"""`MonitorConfig`: everything an operator sets, from a YAML file with environment overrides.

Environment variables override the file: `DRIFTLINE_<SECTION>__<FIELD>`, e.g.
`DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092` or `DRIFTLINE_KAFKA__SASL_PASSWORD=...`.
Secrets belong in the environment only. A bad configuration fails at start with the field path
and the reason (`ConfigError`).

>>> config = MonitorConfig.model_validate({"window": {"size_events": 500}})
>>> config.window.size_events, config.model("fraud").task
(500, <Task.auto: 'auto'>)
>>> MonitorConfig.model_validate({"window": {"size_events": 0}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MonitorConfig
...
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from monitor.contracts.alert import AlertKind, Severity
from monitor.contracts.limits import EventLimits


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureType(StrEnum):
    numeric = "numeric"
    categorical = "categorical"
    vector = "vector"
    """An embedding: a list of `dimension` numbers per event, watched by the embedding signal
    (`monitor.monitoring.embeddings`), never inferred: declare it."""


class Task(StrEnum):
    auto = "auto"
    """Decide from the events: probabilities or 0/1 and boolean predictions mean classification."""
    binary_classification = "binary_classification"
    multiclass_classification = "multiclass_classification"
    regression = "regression"


class Pii(StrEnum):
    """How a feature holding personal data is kept out of every store (`monitor.contracts.privacy`)."""

    hash = "hash"
    """Replaced, where events are decoded, by a keyed hash of its value (HMAC-SHA256 under the key in
    `DRIFTLINE_PII_KEY`): a category whose drift is still monitored, by pseudonym."""
    drop = "drop"
    """Removed where events are decoded: never monitored, never kept."""


class FeatureSpec(_Section):
    type: FeatureType | None = None
    """Overrides the type inferred from the reference; required unless `pii` is set (a hashed
    feature is categorical, a dropped one has no type)."""
    pii: Pii | None = None
    """Personal data: `hash` or `drop` (see `Pii`). Hashing destroys order, so a numeric feature
    cannot be hashed: drop it, or declare it categorical if its values are codes."""
    dimension: int | None = Field(None, ge=2)
    """Length of every value of a `vector` feature (e.g. 384); required for vectors, and only for them."""

    @model_validator(mode="before")
    @classmethod
    def _categorical_when_hashed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") is None and data.get("pii") in (Pii.hash, "hash"):
            return {**data, "type": FeatureType.categorical}
        return data

    @model_validator(mode="after")
    def _typed_or_marked(self) -> FeatureSpec:
        if self.pii is Pii.hash and self.type is FeatureType.numeric:
            raise ValueError(
                "pii: hash on a numeric feature: a hash keeps no order, so its drift could not be measured;"
                " use `pii: drop`, or `type: categorical` if its values are codes"
            )
        if self.type is None and self.pii is None:
            raise ValueError("a feature needs a `type`, a `pii` marking, or both")
        if self.type is FeatureType.vector:
            if self.dimension is None:
                raise ValueError("dimension: a `vector` feature needs its `dimension` (the length of every value)")
            if self.pii is Pii.hash:
                raise ValueError(
                    "pii: hash on a vector feature: a pseudonym of a list of numbers has no geometry to monitor;"
                    " use `pii: drop`"
                )
        elif self.dimension is not None:
            raise ValueError(f"dimension: only a `vector` feature has one (this one is {self.type or 'untyped'})")
        return self


class WindowConfig(_Section):
    """Tumbling windows on event time, sized by events or by seconds (exactly one of them)."""

    size_events: int | None = Field(1000, gt=0)
    """Close a window after this many events of the model."""
    size_seconds: float | None = Field(None, gt=0)
    """Close a window when event time passes its end; overrides `size_events`."""
    allowed_lateness_seconds: float = Field(0.0, ge=0)
    """How long after a time window's end its late events are still counted in it."""
    min_events: int = Field(100, gt=0)
    """A window with fewer events is not tested (too few to judge), only counted."""


class DetectorsConfig(_Section):
    """Registered detector names per kind of data (see `monitor.detectors.registry`)."""

    numeric: list[str] = ["cusum", "ks"]
    categorical: list[str] = ["category_cusum", "chi_square", "unseen_share"]
    prediction: list[str] = ["cusum", "ks"]
    """Applied to the model's score (numeric) or class (categorical) distribution."""
    multivariate: list[str] = ["pca_reconstruction"]
    params: dict[str, dict[str, Any]] = {}
    """Per detector name, keyword arguments for its constructor."""


class ReferenceConfig(_Section):
    warmup_events: int = Field(5000, gt=0)
    """Without a reference file, the model's first events form its reference."""
    sample_size: int = Field(5000, gt=0)
    """Values per feature kept (reservoir) to calibrate thresholds."""


class DataQualityConfig(_Section):
    """Rule thresholds per window; rates are shares of the window's events."""

    max_null_rate_increase: float = Field(0.05, ge=0, le=1)
    max_type_mismatch_rate: float = Field(0.01, ge=0, le=1)
    max_out_of_range_rate: float = Field(0.02, ge=0, le=1)
    """Share of numeric values outside the reference's [min, max] widened by `range_margin`."""
    range_margin: float = Field(0.1, ge=0)
    """Widening of the reference range, as a share of its width."""
    max_unseen_category_rate: float = Field(0.05, ge=0, le=1)


class EmbeddingsConfig(_Section):
    """How a `vector` feature is projected before its test (`monitor.monitoring.embeddings`)."""

    variance_kept: float = Field(0.9, gt=0, lt=1)
    """Principal components are kept until they explain this share of the reference's variance;
    off them, the rows' distance and the window mean's are watched as a whole."""
    max_components: int = Field(32, ge=1, le=256)
    """At most this many components (each is a few numbers of state and one term of the test)."""


class AlertingConfig(_Section):
    false_alarms_per_model_per_day: float = Field(0.1, gt=0)
    """False-alarm budget of one model, shared by all its detectors, features and slices."""
    events_per_model_per_day: float = Field(1_000_000, gt=0)
    """Expected traffic of one model, to turn the daily budget into a per-event rate."""
    repeat_interval_seconds: float = Field(4 * 3600, gt=0)
    """A firing alert is sent again after this much event time (Alertmanager's repeat_interval)."""
    resolve_after_clean_windows: int = Field(3, gt=0)
    """An alert resolves after this many consecutive windows without the condition."""
    runbook_base_url: str = "https://github.com/driftline/driftline/blob/main/runbooks"
    severity: dict[AlertKind, Severity] = {
        AlertKind.data_quality: Severity.warning,
        AlertKind.feature_drift: Severity.warning,
        AlertKind.prediction_drift: Severity.warning,
        AlertKind.multivariate_drift: Severity.warning,
        AlertKind.performance_degradation: Severity.critical,
        AlertKind.estimated_performance_drop: Severity.warning,
        AlertKind.canary_regression: Severity.critical,
        AlertKind.slice_regression: Severity.warning,
        AlertKind.serving_degradation: Severity.critical,
        AlertKind.labels_missing: Severity.warning,
        AlertKind.attribution_drift: Severity.warning,
    }

    @property
    def run_length_events(self) -> float:
        """Expected events of one model between two false alarms (the budget as a run length)."""
        return self.events_per_model_per_day / self.false_alarms_per_model_per_day


class CostConfig(_Section):
    false_positive: float = Field(1.0, ge=0)
    false_negative: float = Field(1.0, ge=0)


class EvaluationConfig(_Section):
    join_ttl_seconds: float = Field(7 * 86400, gt=0)
    """A prediction waits this long (event time) for its outcome, then counts as never labelled."""
    early_outcome_ttl_seconds: float = Field(3600, gt=0)
    """An outcome that arrives before its prediction waits this long for it."""
    expected_label_coverage: float = Field(0.0, ge=0, le=1)
    """Share of predictions expected to get a label within the TTL; below it, `labels_missing`."""
    canary_margin: float = Field(0.02, ge=0)
    """A canary must be worse than its baseline by more than this (and significantly) to alert."""
    slice_margin: float = Field(0.05, ge=0)
    slice_min_samples: int = Field(200, gt=0)
    max_latency_ms_p99: float | None = Field(None, gt=0)
    max_request_error_rate: float | None = Field(None, gt=0, le=1)
    warmup_outcomes: int | None = Field(None, gt=0)
    """Joined outcomes forming the error and CBPE reference when none is given; default `reference.warmup_events`."""
    budget_share: float = Field(0.5, gt=0, lt=1)
    """Share of the model's false-alarm budget spent by the evaluation checks, split equally among them;
    the drift detectors share the rest."""
    check_windows: int = Field(10, gt=0)
    """Canary and slice checks look at the outcomes joined during the last this many windows."""
    canary_min_samples: int = Field(200, gt=0)
    """Outcomes each version needs within `check_windows` before the canary test runs."""
    cbpe_margin: float = Field(0.02, ge=0, lt=1)
    """Smallest drop of the CBPE-estimated accuracy below the reference worth an alert."""
    label_coverage_horizon_seconds: float | None = Field(None, gt=0)
    """Age at which a window's label coverage is judged (`expected_label_coverage`); default `join_ttl_seconds`."""


class SliceDriftConfig(_Section):
    """Drift per slice (`monitor.monitoring.slice_drift`): the model's drift detectors on each of
    the largest values of the slice keys named here, so a change in one country or one customer
    segment that vanishes in the total is found and named.

    Opt-in: each watched slice is calibrated like a model of its own (CPU at start, state after),
    and its detectors share the model's false-alarm budget, which makes every other detector of
    the model a little stricter.

    >>> SliceDriftConfig(keys=["country"]).max_slices
    10
    """

    keys: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1)
    """Slice keys (keys of the events' `slices`, e.g. `country`) whose values are watched apart."""
    max_slices: int = Field(10, gt=0, le=100)
    """Values watched per key: the largest by events over the model's first `selection_events`.
    The others are counted as left out (in every slice alert's evidence), never watched."""
    selection_events: int | None = Field(None, gt=0)
    """The model's first events over which the largest slices are chosen; default `reference.warmup_events`."""
    reference_events: int | None = Field(None, gt=0)
    """A watched slice's first events after the choice form its reference; default
    `reference.warmup_events`. Fewer make a slice's alarms depend more on the luck of its reference."""

    @model_validator(mode="after")
    def _keys_unique(self) -> SliceDriftConfig:
        twice = sorted({key for key in self.keys if self.keys.count(key) > 1})
        if twice:
            raise ValueError(f"keys: {twice} listed more than once")
        return self


class AttributionConfig(_Section):
    """Attribution drift (`monitor.monitoring.attribution`): how much each feature drives the
    model's predictions (mean |attribution| per window, from the events' `attributions`, e.g.
    SHAP values) against the model's first events that carry them. One calibrated test per model,
    in the model's false-alarm budget; a model without this section runs none of it.

    >>> ModelConfig.model_validate({"model_id": "fraud", "attribution": {"top_features": 3}}).attribution
    AttributionConfig(top_features=3)
    """

    top_features: int = Field(5, ge=1, le=50)
    """Features the alert's evidence and summary rank, those whose influence changed most."""


class ModelConfig(_Section):
    model_id: str
    task: Task = Task.auto
    positive_class: str | int | bool = 1
    features: dict[str, FeatureSpec] = {}
    """Declared feature types; undeclared features are inferred from the reference."""
    reference: Path | None = None
    """Reference profile built by `driftline reference`; without one, the first events warm up."""
    slices: list[str] = []
    """Slice names (keys of the events' `slices`) to evaluate separately."""
    baseline_version: str | None = None
    """Version that canaries are compared with; by default the one that served most."""
    cost: CostConfig | None = None
    window: WindowConfig | None = None
    """Overrides the global `window` for this model."""
    detectors: DetectorsConfig | None = None
    """Overrides the global `detectors` for this model."""
    slice_drift: SliceDriftConfig | None = None
    """Drift detectors per value of these slice keys (`SliceDriftConfig`); none by default."""
    attribution: AttributionConfig | None = None
    """Watch what drives the model's predictions (its events' `attributions`); off when absent."""


class CapsConfig(_Section):
    """Bounds on state, so hostile traffic cannot grow memory; overflow is counted and reported."""

    max_models: int = Field(1000, gt=0)
    max_features_per_model: int = Field(200, gt=0)
    max_categories: int = Field(100, gt=0)
    """Distinct values kept per categorical feature; the rest count as overflow."""
    max_slice_values: int = Field(50, gt=0)
    """Distinct values kept per slice name; the rest are evaluated together as `other`."""
    max_model_versions: int = Field(10, gt=0)
    max_pending_predictions: int = Field(10_000_000, gt=0)


class TopicsConfig(_Section):
    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "alerts"
    dead_letter: str = "driftline-dead-letter"
    retrain_requests: str = "retrain-requests"
    audit: str = "driftline-audit"
    review_requests: str = "review-requests"
    """Where the playbook runner asks a person to look at an alert (`ReviewRequest`)."""
    approvals: str = "driftline-approvals"
    """Where people approve a rollback for an alert fingerprint (`Approval`)."""


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:19092"
    profile: Literal["kafka", "embedded"] = "kafka"
    """`embedded` applies the workarounds the embedded broker needs (see BROKER.md)."""
    partitions: int = Field(4, gt=0)
    replication_factor: int = Field(1, gt=0)
    consumer_group: str = "driftline"
    checkpoint_seconds: float = Field(5.0, ge=0)
    """How often a worker saves its states and input positions (0: after every batch). Saving
    costs the same for a batch of 10 events as for 500; a crash replays the input since the last
    checkpoint, which the saved states skip, and publishes its alerts again (same `alert_id`)."""
    max_state_bytes: int = Field(32 * 1024 * 1024, ge=65536)
    """Largest state record a worker writes, and the `max.message.bytes` of the changelog topics
    it creates (a model's monitor takes about 2 MB with 25 features at the default warm-up; a
    join partition 35-60 bytes per pending prediction). A larger state is not saved, nor the
    input positions it covers, until it fits (`DriftlineStateTooLarge`). Lower it where the
    cluster caps topic message sizes below 32 MB; it applies to changelogs when they are created."""
    topics: TopicsConfig = TopicsConfig()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    """From the environment only: `DRIFTLINE_KAFKA__SASL_PASSWORD`."""
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class MetricsConfig(_Section):
    host: str = Field("0.0.0.0", min_length=1, max_length=255)
    """Address `/metrics` listens on: every interface by default, so Prometheus on another host
    can scrape it; `127.0.0.1` keeps it on this machine (the demo)."""
    port: int = Field(9108, ge=0, le=65535)
    """Port of `/metrics` on every worker; 0 picks a free one (logged at start)."""
    max_drift_features_per_model: int = Field(50, ge=0)
    """Features per model whose drift scores and thresholds are exported (those nearest their
    thresholds); the rest are counted in `driftline_drift_features_hidden`. Bounds the series
    Prometheus stores at models x this x detectors."""


# --- playbooks: the rules of `driftline playbooks` (monitor/playbooks/) -----------------------

PLAYBOOK_TEMPLATE_FIELDS = (
    "alert_id",
    "fingerprint",
    "kind",
    "model_id",
    "model_version",
    "severity",
    "target_version",
)
"""The only `{placeholders}` a URL or command template may use: alert fields and configured values."""


def _template_fields(template: str) -> list[str]:
    """The placeholders of `template`, refusing anything but plain names from the allowed list."""
    import string

    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in PLAYBOOK_TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"Invalid placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                f" in {template!r}. Valid values are: {PLAYBOOK_TEMPLATE_FIELDS}"
            )
        names.append(name)
    return names


class PlaybookHttp(_Section):
    """An HTTP request whose target is fixed by this configuration, never by alert content.

    `{model_id}` and the other `PLAYBOOK_TEMPLATE_FIELDS` may appear in the path and query only,
    and are URL-quoted when filled, so an alert cannot change the scheme, host or port."""

    url: str
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    headers: dict[str, str] = {}
    """Constant, non-secret headers."""
    headers_from_env: dict[str, str] = {}
    """Header name -> name of the environment variable holding its value (tokens stay out of files)."""
    timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _fixed_target(self) -> PlaybookHttp:
        from urllib.parse import urlsplit

        _template_fields(self.url)
        fixed = urlsplit(self.url.split("{", 1)[0])
        if fixed.scheme not in ("http", "https") or not fixed.netloc:
            raise ValueError(f"url {self.url!r}: must start with http:// or https:// and a host")
        if "{" in self.url and not fixed.path.startswith("/"):
            raise ValueError(f"url {self.url!r}: placeholders are allowed in the path and query only")
        return self


class RollbackAction(_Section):
    """Switch the model to a configured version, by HTTP or by a command run without a shell."""

    type: Literal["rollback"]
    http: PlaybookHttp | None = None
    """The model server's endpoint; the body is JSON (model, from and to version, alert id)."""
    command: list[str] | None = None
    """An argv list, e.g. `["kubectl", "rollout", "undo", "deployment/{model_id}"]`; the program is fixed."""
    command_timeout_seconds: float = Field(60.0, gt=0)
    target_version: str = "previous"
    """Version to switch to, as `{target_version}`; `target_versions` overrides it per model."""
    target_versions: dict[str, str] = {}
    approval: Literal["required", "none"] = "required"
    """`required`: act only after an `Approval` for the alert's fingerprint on `kafka.topics.approvals`."""
    once_per_model_seconds: float = Field(86400.0, ge=0)
    """At most one rollback per model in this period, whatever the rule."""

    @model_validator(mode="after")
    def _one_way(self) -> RollbackAction:
        if (self.http is None) == (self.command is None):
            raise ValueError("rollback needs exactly one of `http` or `command`")
        if self.command is not None:
            if not self.command or _template_fields(self.command[0]):
                raise ValueError("rollback `command`: a non-empty argv list whose program has no placeholder")
            for argument in self.command:
                _template_fields(argument)
        return self


class RetrainAction(_Section):
    """Ask for retraining: a `RetrainRequest` to `kafka.topics.retrain_requests`, or to a webhook."""

    type: Literal["retrain"]
    webhook: PlaybookHttp | None = None
    training_window_seconds: float = Field(7 * 86400.0, gt=0)
    """Data window to train on: this long, ending at the end of the alert's evidence window."""


class HumanReviewAction(_Section):
    """Ask a person to look: a `ReviewRequest` (alert, runbook link) to `kafka.topics.review_requests` or a webhook."""

    type: Literal["human_review"]
    webhook: PlaybookHttp | None = None


class NotifyAction(_Section):
    """Post the alert to a webhook (chat, ticketing)."""

    type: Literal["notify"]
    webhook: PlaybookHttp


PlaybookAction = Annotated[
    RollbackAction | RetrainAction | HumanReviewAction | NotifyAction, Field(discriminator="type")
]


class PlaybookRule(_Section):
    """When an alert matches (kind, severity, model, firing long enough), run `action`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Unique; names the rule in the audit trail and in idempotency keys."""
    kinds: list[AlertKind] = Field(min_length=1)
    severities: list[Severity] = list(Severity)
    models: list[str] = ["*"]
    """Model ids or globs (`fraud-*`)."""
    min_firing_seconds: float = Field(0.0, ge=0)
    """Event time the alert must have been firing (from its `starts_at` to its evidence's `window_end`)."""
    enabled: bool = True
    """False: the rule is ignored, as if absent."""
    dry_run: bool = True
    """True (the default): decisions are audited as `dry_run`, nothing is done. Set false to act."""
    cooldown_seconds: float = Field(3600.0, ge=0)
    """After acting for a model, this rule waits this long before acting for that model again."""
    action: PlaybookAction


class PlaybookRateLimit(_Section):
    """Token bucket over every action of the runner: `actions` at once, refilled over `per_seconds`."""

    actions: int = Field(10, gt=0)
    per_seconds: float = Field(60.0, gt=0)


class PlaybookRetry(_Section):
    """A failed action is tried again after `backoff_seconds`, doubling up to `max_backoff_seconds`."""

    attempts: int = Field(3, ge=1, le=10)
    """Tries in all, the first included."""
    backoff_seconds: float = Field(1.0, ge=0)
    max_backoff_seconds: float = Field(30.0, ge=0)


class PlaybookSilence(_Section):
    """No action for matching alerts until `ends_at` (like an Alertmanager silence)."""

    models: list[str] = ["*"]
    kinds: list[AlertKind] = []
    """Empty: every kind."""
    ends_at: AwareDatetime
    comment: str = Field(min_length=1)
    """Who and why; shown in the audit trail."""


class PlaybooksConfig(_Section):
    """The playbook runner: rules, guardrails and where it writes its audit trail."""

    rules: list[PlaybookRule] = []
    dry_run: bool = False
    """Kill switch: true forces every rule to dry-run (`DRIFTLINE_PLAYBOOKS__DRY_RUN=true`)."""
    kill_switch_file: Path | None = None
    """While this file exists every rule runs dry; checked at each decision, no restart needed."""
    audit_file: Path = Path("driftline-playbooks-audit.jsonl")
    """JSONL audit trail; read back at start so a restarted runner does not act twice."""
    consumer_group: str = "driftline-playbooks"
    start_from: Literal["latest", "earliest"] = "latest"
    """Where a new consumer group starts on `alerts`: `latest` never acts on old alerts."""
    rate_limit: PlaybookRateLimit = PlaybookRateLimit()
    retry: PlaybookRetry = PlaybookRetry()
    approval_ttl_seconds: float = Field(86400.0, gt=0)
    """An approval without `expires_at` is valid this long after it is received."""
    max_pending_approvals: int = Field(1000, gt=0)
    """Rollbacks waiting for approval kept at most; the oldest is dropped (and audited) beyond."""
    silences: list[PlaybookSilence] = []

    @model_validator(mode="after")
    def _rule_names_unique(self) -> PlaybooksConfig:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"playbook rule names must be unique: {duplicates}")
        return self


class MonitorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    models: list[ModelConfig] = []
    """Models with settings of their own; any other model is monitored with the defaults."""
    window: WindowConfig = WindowConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    reference: ReferenceConfig = ReferenceConfig()
    data_quality: DataQualityConfig = DataQualityConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    alerting: AlertingConfig = AlertingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    caps: CapsConfig = CapsConfig()
    limits: EventLimits = EventLimits()
    kafka: KafkaConfig = KafkaConfig()
    metrics: MetricsConfig = MetricsConfig()
    playbooks: PlaybooksConfig = PlaybooksConfig()
    """Rules of the playbook runner (`driftline playbooks`); none by default, so it does nothing."""

    @model_validator(mode="after")
    def _model_ids_unique(self) -> MonitorConfig:
        seen: set[str] = set()
        for model in self.models:
            if model.model_id in seen:
                raise ValueError(f"model {model.model_id!r} is configured twice")
            seen.add(model.model_id)
        return self

    def model(self, model_id: str) -> ModelConfig:
        """The settings of one model, with the global window and detectors filled in. Its
        `features` are those with a type: a feature marked `pii: drop` alone never reaches the
        monitor (`monitor.contracts.privacy` removes it where events are decoded)."""
        for model in self.models:
            if model.model_id == model_id:
                break
        else:
            model = ModelConfig(model_id=model_id)
        update: dict[str, Any] = {"window": model.window or self.window, "detectors": model.detectors or self.detectors}
        if any(spec.type is None for spec in model.features.values()):
            update["features"] = {name: spec for name, spec in model.features.items() if spec.type is not None}
        return model.model_copy(update=update)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: arguments, then the environment, then the YAML file if any.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names each bad field and why."""


def load_config(path: str | Path | None) -> MonitorConfig:
    """Read the YAML file at `path` (or only the environment when None), environment winning.

    Relative `reference` paths are resolved against the configuration file's folder."""
    from monitor.contracts.validation import format_validation_error

    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config: no such file {str(path)!r}")
    settings_cls = MonitorConfig
    if path is not None:
        file_config = {**MonitorConfig.model_config, "yaml_file": str(path)}
        settings_cls = type("MonitorConfig", (MonitorConfig,), {"model_config": file_config})
    try:
        config = MonitorConfig.model_validate(settings_cls().model_dump())
    except ValidationError as exc:
        raise ConfigError(f"config {path or '(environment)'}: {format_validation_error(exc, max_errors=10)}") from None
    except Exception as exc:  # YAML syntax errors and the like
        raise ConfigError(f"config {path}: {exc}") from None
    if path is None:
        return config
    base = Path(path).parent
    models = [
        m.model_copy(update={"reference": base / m.reference})
        if m.reference is not None and not m.reference.is_absolute()
        else m
        for m in config.models
    ]
    return config.model_copy(update={"models": models})
