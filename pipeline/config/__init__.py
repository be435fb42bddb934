"""Typed, frozen configuration loaded from environments/<env>.yaml merged over base.yaml.

`models` holds the sections, `loader` reads and validates the files, `schema` generates what is
derived from the models (schema.json, docs/config-reference.md). Imports nothing of ours outside this
package but the model card's literals (`Task`, model_service/contract/card.py, standard library only):
every other module depends on this one, never the reverse.
"""

from model_service.contract.card import Task
from pipeline.config.loader import (
    BASE_FILE,
    EXTENDS_KEY,
    ConfigError,
    deep_merge,
    diff,
    gate_metric_problems,
    known_environments,
    load_config,
)
from pipeline.config.models import (
    DEFAULT_MIN_EFFECT_MS,
    LATENCY_METRICS,
    PREDICTION_SHIFT_METRICS,
    TASK_METRICS,
    AnalysisSpec,
    ClusterTiming,
    Config,
    DataSpec,
    DriftLevels,
    LoadTestSpec,
    ModelSpec,
    ShadowBound,
    ShadowSpec,
    SloBounds,
)
from pipeline.config.schema import REFERENCE_FILE, config_reference, json_schema

__all__ = [
    "BASE_FILE",
    "DEFAULT_MIN_EFFECT_MS",
    "EXTENDS_KEY",
    "LATENCY_METRICS",
    "PREDICTION_SHIFT_METRICS",
    "REFERENCE_FILE",
    "TASK_METRICS",
    "AnalysisSpec",
    "ClusterTiming",
    "Config",
    "ConfigError",
    "DataSpec",
    "DriftLevels",
    "LoadTestSpec",
    "ModelSpec",
    "ShadowBound",
    "ShadowSpec",
    "SloBounds",
    "Task",
    "config_reference",
    "deep_merge",
    "diff",
    "gate_metric_problems",
    "json_schema",
    "known_environments",
    "load_config",
]
