"""Configuration, checked once at parse time by ``rules/common.smk``; it never opens a data file.

- :mod:`.files`: the config files re-read strictly, and ``--config`` values typed by the schema.
- :mod:`.validate`: the JSON schema, then the cross-key checks (one line naming the key).
- :mod:`.plan`: the static plan of files and shards the rules are built from.
"""

from tahoeflow.config.files import check_config_file, check_config_files, coerce_cli_values
from tahoeflow.config.plan import METADATA_KINDS, Plan, make_plan, plan_manifest, read_manifest
from tahoeflow.config.validate import h5ad_settings, revision_problem, validate_config

__all__ = [
    "METADATA_KINDS",
    "Plan",
    "check_config_file",
    "check_config_files",
    "coerce_cli_values",
    "h5ad_settings",
    "make_plan",
    "plan_manifest",
    "read_manifest",
    "revision_problem",
    "validate_config",
]
