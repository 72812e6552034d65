# headsieve: what each attention head does, and which heads can be pruned.
# Wiring only: config, validation, rule files, targets. The science lives in src/headsieve.
from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/attention.smk"
include: "workflow/rules/roles.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/multilingual.smk"
include: "workflow/rules/translation.smk"
include: "workflow/rules/llm.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        all_targets(),
