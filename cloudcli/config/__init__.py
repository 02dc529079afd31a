"""params.yaml -> typed, validated, frozen config objects (an unknown key is an error).

schema.py and schema_post.py: one frozen dataclass per section; loader.py: the YAML and the strict
build; checks.py: checks across sections, and the TTA views training never shows; presets.py: the
packaged defaults (defaults.yaml, the repository's params.yaml) and presets/, merged by `cloudcli init`.
"""

from cloudcli.config.checks import report_names, tta_warnings
from cloudcli.config.loader import ResolvedModel, build, load_params, override_ensemble, read_yaml, resolve_model
from cloudcli.config.schema import (
    CLASS_HEAD,
    CLASSIFIER_LOSSES,
    SEG_LOSSES,
    AugmentConfig,
    CvConfig,
    DataConfig,
    FoldConfig,
    ModelEntry,
    NetworkConfig,
    PreprocessConfig,
    Size,
    SwaConfig,
    TrainConfig,
)
from cloudcli.config.schema_post import (
    EnsembleConfig,
    InferConfig,
    Params,
    PseudoConfig,
    ReportConfig,
    ReportLabelsConfig,
    RoundConfig,
    TuneConfig,
)
from cloudcli.errors import ConfigError

__all__ = [
    "CLASSIFIER_LOSSES",
    "CLASS_HEAD",
    "SEG_LOSSES",
    "AugmentConfig",
    "ConfigError",
    "CvConfig",
    "DataConfig",
    "EnsembleConfig",
    "FoldConfig",
    "InferConfig",
    "ModelEntry",
    "NetworkConfig",
    "Params",
    "PreprocessConfig",
    "PseudoConfig",
    "ReportConfig",
    "ReportLabelsConfig",
    "ResolvedModel",
    "RoundConfig",
    "Size",
    "SwaConfig",
    "TrainConfig",
    "TuneConfig",
    "build",
    "load_params",
    "override_ensemble",
    "read_yaml",
    "report_names",
    "resolve_model",
    "tta_warnings",
]
