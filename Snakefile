# tahoeflow: Tahoe-100M -> shard summaries -> merge -> features, embeddings, models, report.
# Thin on purpose: configuration and helpers live in rules/common.smk, one .smk file per stage.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


# Wildcards match only shard and file numbers, so no target can reach outside results/.
wildcard_constraints:
    shard=r"\d{5}(-\d{4})?",
    group=r"\d{5}(-\d{4})?(_\d{5}(-\d{4})?)?",
    batch=r"b\d{5}",
    file=r"\d{5}",
    total=r"\d{5}",
    kind="|".join(METADATA_KINDS),


include: "rules/source.smk"


# The stages that read expression files; source.kind obs has none (phenotypes from obs only).
if PLAN.kind != "obs":

    include: "rules/summarize.smk"
    include: "rules/merge.smk"
    include: "rules/embed.smk"
    include: "rules/models.smk"
    include: "rules/report.smk"
    include: "rules/de.smk"
    include: "rules/updown.smk"
    include: "rules/pergene.smk"
    include: "rules/export.smk"


include: "rules/phenotypes.smk"
include: "rules/cellcycle.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


# No config key may name a rule's output (or the output folders) as an input.
check_user_inputs(workflow.rules)
# Every script rule records the digest of the library code it runs (params.code).
record_code(workflow.rules)
