# Config validation, path helpers, input functions and wildcard constraints.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    from headsieve.config import (
        SCHEMA_PATH,
        corpus_local_path,
        corpus_missing_message,
        ensure_cli_on_path,
        validate_config,
    )
    from headsieve.errors import HeadsieveError
    from headsieve.pruning.strategies import (
        is_fixed_size as strategy_is_fixed_size,
        needs_role_labels,
    )
except ImportError as err:
    raise WorkflowError(
        f"the headsieve package is not importable ({err}); run the setup in README.md "
        "(pip install -e .) in the environment that runs snakemake"
    )

# Rules call the `headsieve` command; from a virtualenv that is not activated, find it beside this python.
ensure_cli_on_path()

try:
    # the package's schema: the one the command line checks its ranges against
    validate_config(config, SCHEMA_PATH)
except HeadsieveError as err:
    raise WorkflowError(str(err))


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    corpus=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    seed=r"[0-9]+",
    fraction=r"0\.[0-9][0-9]|fixed",
    strategy=r"[a-z_]+(\+[A-Za-z0-9_+]+)?",


def folder_of(name):
    """A params function: the folder of output ``name`` (so that a rule spells each path once)."""
    return lambda wildcards, output: str(Path(output[name]).parent)


def stem_of(name):
    """A params function: output ``name`` without its suffix (figures are written as .png and .pdf)."""
    return lambda wildcards, output: str(Path(output[name]).with_suffix(""))


FINETUNED = "--"  # a model key "<model>--<task>" names the model fine-tuned on the task (first seed)
SEED_KEY = "--seed"  # "<model>--<task>--seed<s>": fine-tuned with seed s (roles.finetuned_seeds)


def model_spec_json(model):
    """The model entry as JSON; a fine-tuned model points to its folder under results/ and names the
    pre-trained model and seed its metrics.json must record (checked by the steps that load it).
    """
    if FINETUNED in model:
        base, _, seed = finetuned_parts(model)
        made_from = {"model": base, "seed": seed}
        return json.dumps(
            {"source": finetuned_model_folder(model), "finetuned": made_from},
            sort_keys=True,
        )
    return spec_json("models", model)


def finetuned_parts(model):
    """(pre-trained model, task, seed) of a fine-tuned model key; no seed in the key = the first pruning seed."""
    base, rest = model.split(FINETUNED, 1)
    task, marked, seed = rest.partition(SEED_KEY)
    if marked and not seed.isdigit():
        raise WorkflowError(
            f"model key '{model}': expected <model>--<task>--seed<number>"
        )
    return base, task, int(seed) if marked else config["pruning"]["seeds"][0]


def finetuned_key(model, task, seed):
    """The model key of ``model`` fine-tuned on ``task`` with ``seed``: the plain ``<model>--<task>`` for the
    first pruning seed (so that its roles are computed once), ``<model>--<task>--seed<s>`` otherwise.
    """
    if int(seed) == config["pruning"]["seeds"][0]:
        return f"{model}{FINETUNED}{task}"
    return f"{model}{FINETUNED}{task}{SEED_KEY}{seed}"


def finetuned_model_folder(model):
    base, task, seed = finetuned_parts(model)
    return f"results/{base}/{task}/seed{seed}/finetuned/model"


MADE_MODELS = "resources/models/"  # model folders a rule makes (the converted multilingual encoder)


def model_inputs(wildcards):
    """The model's own files when a rule makes them (a fine-tuned or converted model), else nothing."""
    model = wildcards.model
    if FINETUNED in model:
        return [str(Path(finetuned_model_folder(model)).parent)]
    source = config["models"].get(model, {}).get("source", "")
    if source.startswith(MADE_MODELS):
        return [source.rstrip("/")]
    return []


def language_evals(task):
    """Language -> evaluation corpus of a multilingual task (a task's own eval split counts as English)."""
    evals = config["multilingual"]["prunability"]["evaluations"].get(task)
    return evals if evals else {"en": config["tasks"][task]["eval"]}


def language_evals_json(task):
    return json.dumps(
        {
            language: {"spec": config["corpora"][corpus], "paths": corpus_path(corpus)}
            for language, corpus in sorted(language_evals(task).items())
        },
        sort_keys=True,
    )


def gpu_count(wildcards):
    return 1 if config["device"] == "cuda" else 0


def spec_json(section, key):
    """A config entry as canonical JSON: the rule param that carries it (a change reruns the step)."""
    return json.dumps(config[section][key], sort_keys=True)


PARSED = "resources/parsed/"  # CoNLL-U files the parse_corpus rule writes


def corpus_path(corpus):
    """The corpus file(s): the data mirror's copy, else the downloaded one under resources/; a parsed
    corpus is the CoNLL-U file the parse_corpus rule writes."""
    if config["corpora"][corpus]["format"] == "parsed":
        return [f"{PARSED}{corpus}.conllu"]
    local = corpus_local_path(config, corpus)
    if local is not None:
        return [str(p) for p in local]
    spec = config["corpora"][corpus]
    if "url" not in spec:
        raise WorkflowError(corpus_missing_message(config, corpus))
    name = Path(
        spec.get("member") or spec.get("path") or spec["url"].split("?")[0]
    ).name
    return [f"resources/corpora/{corpus}/{name}"]


def corpus_file(wildcards):
    return corpus_path(wildcards.corpus)


def parse_source_file(wildcards):
    return corpus_path(config["corpora"][wildcards.corpus]["source"])


def corpus_spec_json(corpus):
    """The corpus entry as the tokenize step reads it: a parsed corpus is read as CoNLL-U (its entry,
    parser and source included, stays in the param, so changing either reruns the step).
    """
    spec = dict(config["corpora"][corpus])
    if spec["format"] == "parsed":
        source = config["corpora"][spec["source"]]
        spec = dict(spec, format="conllu", source_spec=source)
    return json.dumps(spec, sort_keys=True)


def task_file(task, split):
    """The file of a task's training or evaluation split."""
    return corpus_path(config["tasks"][task][split])


def task_json(task):
    """A task's entry as JSON, without its fine-tuning changes (those are the finetune rule's own param)."""
    entry = {k: v for k, v in config["tasks"][task].items() if k != "finetune"}
    return json.dumps(entry, sort_keys=True)


def task_corpus_json(task, split):
    return spec_json("corpora", config["tasks"][task][split])


def strategy_slug(name):
    """A strategy name as a path part: prune_role:dep:nsubj -> prune_role+dep+nsubj."""
    return name.replace(":", "+")


def strategy_name(slug):
    return slug.replace("+", ":")


def fraction_tag(fraction):
    return f"{fraction:.2f}"


def all_strategies():
    block = config["pruning"]
    return list(block["strategies"])


def is_fixed_size(strategy):
    return strategy_is_fixed_size(strategy)


def strategies_for(group):
    """Strategies whose masks a mask group holds: fixed-size ones in 'fixed', the others per fraction."""
    return [s for s in all_strategies() if is_fixed_size(s) == (group == "fixed")]


def mask_groups():
    """Fraction tags (masks are selected and evaluated per fraction), plus 'fixed' for fixed-size strategies."""
    block = config["pruning"]
    fractions = sorted(set(block["fractions"]))
    groups = [fraction_tag(f) for f in fractions]
    return groups + (
        ["fixed"] if any(is_fixed_size(s) for s in all_strategies()) else []
    )


def role_labels_input(wildcards):
    """The pre-trained model's role tests, when a role strategy needs them."""
    corpus = config["pruning"]["role_labels"]
    if corpus and needs_role_labels(all_strategies()):
        return [f"results/{wildcards.model}/{corpus}/roles/tests.parquet"]
    return []


PRUNING_FIGURES = ("metric_by_fraction", "strategy_comparisons", "compensation")
ROLE_FIGURES = ("role_map", "relation_map", "heads_per_layer", "pvalues", "colocation")


def role_options():
    """The scoring options of the roles section (tau, alpha and correction belong to the tests)."""
    keys = (
        "local_window",
        "direction",
        "aggregation",
        "block_weighting",
        "relations",
        "union",
        "subtypes",
    )
    return {k: config["roles"][k] for k in keys}


def role_pairs():
    """(model, corpus) pairs whose head roles are analysed."""
    block = config["roles"]
    return [(m, c) for m in block["models"] for c in block["corpora"]]


def attention_pairs():
    """(model, corpus) pairs whose attention is analysed."""
    block = config["attention"]
    return [(m, c) for m in block["models"] for c in block["corpora"]]


def parsed_role_corpora():
    """Roles corpora parsed from the text of another roles corpus: their maps are compared with the gold one."""
    corpora = config["corpora"]
    return [
        c
        for c in config["roles"]["corpora"]
        if corpora[c]["format"] == "parsed"
        and corpora[c]["source"] in config["roles"]["corpora"]
    ]


def gold_tests(wildcards):
    source = config["corpora"][wildcards.corpus]["source"]
    return f"results/{wildcards.model}/{source}/roles/tests.parquet"


def finetuned_role_corpora():
    """Roles corpora on which the fine-tuned models' roles are compared (default: every roles corpus)."""
    chosen = config["roles"].get("finetuned_corpora")
    return config["roles"]["corpora"] if chosen is None else chosen


def summary_parts():
    """Every summary.md the report steps of the run write, in reading order (the results_summary input)."""
    parts = []
    for model, corpus in role_pairs():
        parts.append(f"results/{model}/{corpus}/roles/summary.md")
        if corpus in parsed_role_corpora():
            parts.append(f"results/{model}/{corpus}/roles/gold_agreement.md")
        if corpus in finetuned_role_corpora():
            for task in config["roles"]["finetuned"]:
                parts.append(
                    f"results/{model}/{corpus}/roles/finetuned-{task}/summary.md"
                )
    for model in config["pruning"]["models"]:
        for task in config["pruning"]["tasks"]:
            parts.append(f"results/{model}/{task}/pruning/summary.md")
    block = config["multilingual"]
    if block["study"]["models"] and block["study"]["tasks"]:
        parts.append("results/multilingual/summary.md")
    return parts


# ---- pruning and fine-tuned role inputs (used by pruning.smk and roles.smk)


def protocol_on(name):
    return name in config["pruning"]["protocols"]


def finetune_options(task):
    """The fine-tuning options of a task: the unpruned fine-tuning's and, alike, every pruned one's."""
    return json.dumps(
        {**config["pruning"]["finetune"], **config["tasks"][task].get("finetune", {})},
        sort_keys=True,
    )


def pruned_finetuned_dir(model, task, seed, group):
    return f"results/{model}/{task}/seed{seed}/pruned_finetuned/{group}"


def compensation_items(wildcards):
    """(strategy, fraction tag, model folder) of the models pruned, then fine-tuned, that compensation reads."""
    keep = config["pruning"]["compensation_strategies"]
    items = []
    for strategy in keep:
        if (
            is_fixed_size(strategy)
            or strategy not in all_strategies()
            or strategy in config["pruning"]["mask_only_strategies"]
        ):
            continue
        for fraction in sorted(config["pruning"]["fractions"]):
            if fraction > 0:
                folder = pruned_finetuned_dir(
                    wildcards.model,
                    wildcards.task,
                    wildcards.seed,
                    fraction_tag(fraction),
                )
                items.append(
                    (
                        strategy,
                        fraction_tag(fraction),
                        f"{folder}/models/{strategy_slug(strategy)}",
                    )
                )
    return items


def compensation_wanted():
    return (
        protocol_on("prune_then_finetune")
        and any(
            not is_fixed_size(s)
            and s in all_strategies()
            and s not in config["pruning"]["mask_only_strategies"]
            for s in config["pruning"]["compensation_strategies"]
        )
        and any(f > 0 for f in config["pruning"]["fractions"])
    )


def finetuned_scores(wildcards):
    """The scores of the model fine-tuned on the task with each of roles.finetuned_seeds."""
    return [
        f"results/{finetuned_key(wildcards.model, wildcards.task, seed)}/{wildcards.corpus}/roles/scores.parquet"
        for seed in config["roles"]["finetuned_seeds"]
    ]


# ---- the multilingual study (multilingual.smk)


def study_items():
    """(model, task, seed) of every fine-tuned model the study reads."""
    block = config["multilingual"]["study"]
    return [
        (m, t, s)
        for m in block["models"]
        for t in block["tasks"]
        for s in block["seeds"]
    ]


def study_task_json(task):
    """The task's entry as the study scores it: ``study.max_eval`` caps the evaluation subset."""
    entry = json.loads(task_json(task))
    cap = config["multilingual"]["study"]["max_eval"]
    if cap is not None:
        entry["max_eval"] = min(cap, entry.get("max_eval") or cap)
    return json.dumps(entry, sort_keys=True)


# ---- decoder-only language models (llm.smk; issue 17)

SMOLLM2 = "smollm2"  # the preset the convert_smollm2 rule makes (resources/models/smollm2-135m)
LLM_FIGURES = (
    "role_map",
    "perplexity",
    "copying_loss",
    "retrieval_accuracy",
    "retrieval_token_accuracy",
)


def llm_model_inputs(wildcards):
    """The model's own files where a rule makes them (the converted SmolLM2 of the smollm2 preset)."""
    if config["models"].get(wildcards.model, {}).get("source") == SMOLLM2:
        return ["resources/models/smollm2-135m"]
    return model_inputs(wildcards)


def llm_corpus_items(keys):
    """[{key, spec, files}] of corpus keys, as the llm commands read them (--text, --perplexity)."""
    return [
        {"key": c, "spec": config["corpora"][c], "files": corpus_path(c)} for c in keys
    ]


def llm_text_corpora():
    return llm_corpus_items(config["llm"]["inputs"]["text"])


def llm_perplexity_corpus():
    corpus = config["llm"]["pruning"]["evaluation"]["perplexity"]
    return llm_corpus_items([corpus] if corpus else [])


def llm_role_labels(wildcards):
    """The model's causal role tests, when a role strategy needs them."""
    if needs_role_labels(config["llm"]["pruning"]["strategies"]):
        return [f"results/llm/{wildcards.model}/role_tests.parquet"]
    return []


def llm_importance_input(wildcards):
    """The model's head importance, when the importance strategy is asked for."""
    if any(
        s.split(":")[0] == "importance" for s in config["llm"]["pruning"]["strategies"]
    ):
        return [f"results/llm/{wildcards.model}/importance.parquet"]
    return []


# ---- end decoder-only language models


def all_targets():
    targets = []
    for model, corpus in attention_pairs():
        targets.append(f"results/{model}/{corpus}/attention")
    for model, corpus in role_pairs():
        targets.append(f"results/{model}/{corpus}/roles/summary.md")
        targets.append(f"results/{model}/{corpus}/roles/head_stats.parquet")
        if corpus in parsed_role_corpora():
            targets.append(f"results/{model}/{corpus}/roles/gold_agreement.parquet")
        if corpus not in finetuned_role_corpora():
            continue
        for task in config["roles"]["finetuned"]:
            targets.append(
                f"results/{model}/{corpus}/roles/finetuned-{task}/change.parquet"
            )
            targets.append(
                f"results/{model}{FINETUNED}{task}/{corpus}/roles/summary.md"
            )
    block = config["multilingual"]
    for model in block["models"]:
        targets.append(f"results/{model}/multilingual/similarity_by_fact.parquet")
    for task in block["prunability"]["tasks"]:
        targets.append(f"results/multilingual/{task}/relative_drops.parquet")
    if (
        block["study"]["models"] and block["study"]["tasks"]
    ):  # multilingual study (issue 15 item 6)
        targets.append("results/multilingual/summary.md")
    for model in config["pruning"]["models"]:
        for task in config["pruning"]["tasks"]:
            targets.append(f"results/{model}/{task}/pruning/comparisons.parquet")
    for model in config["llm"]["models"]:  # decoder-only language models (llm.smk)
        targets.append(f"results/llm/{model}/summary.md")
    if summary_parts():
        targets.append("results/summary.md")
    return targets


def translation_files(wildcards):
    """The source and target PUD files of translation model ``mt``: the corpora its languages name in
    translation.languages, found or fetched as every corpus is (corpus_path)."""
    from headsieve.translation.workflow import pair_corpora

    corpora = pair_corpora(config["translation"], wildcards.mt)
    return {side: corpus_path(corpus) for side, corpus in corpora.items()}
