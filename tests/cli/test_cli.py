"""The command line: bad input fails with one line, exit status 2, and no partial output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from headsieve.errors import HeadsieveError
from headsieve.models.load import check_attention_output, load_encoder, load_model_config, load_tokenizer

from support.cli import one_error_line, refused, run_cli, tokenize_args
from support.corpora import GOOD
from support.paths import REPO


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("\t4\tnsubj", "\t0\tnsubj"), "x.conllu:8: sentence 'a1' has 2 roots (words [1, 4])"),
        (GOOD.replace("\t4\tnsubj", "\t12\tnsubj"), "x.conllu:3: HEAD 12 out of range"),
        (GOOD.replace("\tnsubj\t_\t_", "\tnsubj\t_"), "x.conllu:3: expected 10 tab-separated columns"),
        ("", "no sentences (empty corpus)"),
        (GOOD.replace("\t4\tnsubj\t", "\t4\t_\t"), "x.conllu:3: DEPREL '_' is unspecified"),
        (GOOD.replace("2\tdid\tdo", "2-4\tdidntgo\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdid\tdo"),
         "x.conllu:5: multi-word token range '2-4' overlaps '2-3' (line 4)"),
    ],
)
def test_bad_corpus_one_line_no_output(tmp_path, tiny_bert, text, expected):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / "tokens.parquet"
    log = tmp_path / "t.log"
    proc = run_cli(*tokenize_args({"source": str(tiny_bert)}, corpus, out, log=log))
    assert expected in one_error_line(proc)
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary leftovers either
    assert expected in log.read_text()  # the log has it too


def test_missing_corpus_file(tmp_path, tiny_bert):
    proc = run_cli(*tokenize_args({"source": str(tiny_bert)}, tmp_path / "gone.conllu", tmp_path / "t.parquet"))
    assert "gone.conllu: file not found" in one_error_line(proc)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("/no/such/folder", "model 'm': folder '/no/such/folder' does not exist"),
        ("someorg/not-a-cached-model", "model 'm': cannot load 'someorg/not-a-cached-model'"),
    ],
)
def test_missing_model(tmp_path, source, expected):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    proc = run_cli(*tokenize_args({"source": source}, corpus, tmp_path / "t.parquet"))
    assert expected in one_error_line(proc)
    assert not (tmp_path / "t.parquet").exists()


def test_not_an_encoder(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(HeadsieveError, match="model_type 'gpt2' is not a supported encoder"):
        load_model_config("g", {"source": str(tmp_path / "gpt2")})  # load_tokenizer takes decoders too


def test_model_without_attention_probabilities(minilm_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_dir, attn_implementation="sdpa")
    with pytest.raises(HeadsieveError, match="returns no attention probabilities"):
        check_attention_output("m", model, model.config)


def test_dump_refuses_tokens_of_another_model(tmp_path, tiny_bert):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    tokens = tmp_path / "tokens.parquet"
    assert run_cli(*tokenize_args({"source": str(tiny_bert)}, corpus, tokens)).returncode == 0
    out = tmp_path / "attention"
    proc = run_cli(
        "dump", "--model", "other", "--model-spec", json.dumps({"source": str(tiny_bert)}), "--corpus", "c",
        "--tokens", str(tokens), "--output", str(out),
    )  # fmt: skip
    assert "tokens were made with the tokenizer of model ['m'], not 'other'" in one_error_line(proc)
    assert not out.exists()


def test_encoder_loads_with_eager_attention(tiny_bert, tiny_roberta):
    for folder in (tiny_bert, tiny_roberta):
        model = load_encoder("t", {"source": str(folder)})
        assert model.config._attn_implementation == "eager"


# ---------------------------------------------------------------- issue 18: one line, no traceback, no output


def tokenize(tmp_path, model_dir, corpus, spec=None, max_length=64, corpus_key="c", output=None):
    output = output or tmp_path / "tokens.parquet"
    args = tokenize_args({"source": str(model_dir)}, corpus, output, log=tmp_path / "tokenize.log")
    args[args.index("--corpus-spec") + 1] = json.dumps(spec or {"format": "conllu"})
    args[args.index("--max-length") + 1] = str(max_length)
    args[args.index("--corpus") + 1] = corpus_key
    return run_cli(*args)


def test_glue_tab_inside_a_text_through_the_command_line(tmp_path, tiny_bert):
    header = "index\tpromptID\tpairID\tgenre\tb1\tb2\tp1\tp2\tsentence1\tsentence2\tlabel1\tgold_label"
    row = '0\t1\t1n\tgov\t_\t_\t_\t_\t"Price caps\tmay sound attractive.\tThey do.\tneutral\tneutral'
    tsv = tmp_path / "mnli.tsv"
    tsv.write_text(f"{header}\n{row}\n", encoding="utf-8")
    proc = tokenize(tmp_path, tiny_bert, tsv, {"format": "glue", "task": "mnli"})
    refused(proc, "mnli.tsv:2: 13 tab-separated columns, but line 1 has 12", tmp_path / "tokens.parquet")


@pytest.mark.parametrize(
    "command, flag, value, expected",
    [
        ("tokenize", "--max-length", "1", "--max-length 1: 1 is less than the minimum of 8 (the range of config key attention.max_length)"),
        ("dump", "--batch-tokens", "-5", "--batch-tokens -5: -5 is less than the minimum of 64"),
        ("dump", "--shard-mb", "0", "--shard-mb 0: 0 is less than the minimum of 1"),
        ("roles-test", "--alpha", "7", "--alpha 7.0: 7.0 is greater than or equal to the maximum of 1"),
        ("roles-test", "--tau", "nan", "--tau nan: "),
        ("dump", "--model-spec", "{bad json", "bad JSON argument"),
        ("roles-test", "--tau-by-role", '{"blok": 1.5}', "--tau-by-role key 'blok': unknown role 'blok'"),
        ("roles-test", "--tau-by-role", '{"block": -1}', "less than the minimum of 0"),
    ],
)
def test_numbers_are_checked_against_the_config_schema(tmp_path, command, flag, value, expected):
    """The command line refuses what the schema refuses (the schema is the one place of the ranges)."""
    base = {
        "tokenize": ["--model", "m", "--model-spec", "{}", "--corpus", "c", "--corpus-spec", '{"format": "conllu"}',
                     "--input", "x.conllu", "--max-length", "64", "--output", str(tmp_path / "t.parquet")],
        "dump": ["--model", "m", "--model-spec", "{}", "--corpus", "c", "--tokens", "t.parquet",
                 "--output", str(tmp_path / "attention")],
        "roles-test": ["--scores", "s.parquet", "--tau", "0.4", "--alpha", "0.05", "--correction", "bh",
                       "--output", str(tmp_path / "tests.parquet")],
    }[command]  # fmt: skip
    if flag in base:
        base[base.index(flag) + 1] = value
    else:
        base += [flag, value]
    refused(run_cli(command, *base), expected, tmp_path / "t.parquet", tmp_path / "attention", tmp_path / "tests.parquet")


def edited_model(tmp_path, tiny_bert, name, **changes) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"num_hidden_layers": 0}, "config.json num_hidden_layers is 0; it must be a whole number of at least 1"),
        ({"num_attention_heads": 0}, "config.json num_attention_heads is 0"),
        ({"num_attention_heads": -2}, "config.json num_attention_heads is -2"),
        ({"max_position_embeddings": 16}, "its position table holds 16 pieces (config.json max_position_embeddings 16), "
                                          "fewer than attention.max_length 64"),
    ],
)
def test_bad_model_config_is_one_line(tmp_path, tiny_bert, changes, expected):
    folder = edited_model(tmp_path, tiny_bert, "bad", **changes)
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    refused(tokenize(tmp_path, folder, corpus), expected, tmp_path / "tokens.parquet")


def test_position_table_shorter_than_the_tokens_in_the_dump(tmp_path, tiny_bert):
    corpus = tmp_path / "x.conllu"
    corpus.write_text(GOOD, encoding="utf-8")
    assert tokenize(tmp_path, tiny_bert, corpus).returncode == 0
    short = edited_model(tmp_path, tiny_bert, "short", max_position_embeddings=16)
    out = tmp_path / "attention"
    proc = run_cli(
        "--log", str(tmp_path / "dump.log"), "dump", "--model", "m", "--model-spec", json.dumps({"source": str(short)}),
        "--corpus", "c", "--tokens", str(tmp_path / "tokens.parquet"), "--output", str(out),
    )  # fmt: skip
    refused(proc, "its position table holds 16 pieces", out)


def test_pickle_weights_only_when_allowed(tmp_path, tiny_bert):
    """safetensors only, unless the model's config entry sets allow_pickle_weights (then weights_only)."""
    import torch
    from transformers import AutoModel

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(AutoModel.from_pretrained(tiny_bert).state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    with pytest.raises(HeadsieveError, match=r"only pickle weights \(pytorch_model.bin\); headsieve reads safetensors only"):
        load_encoder("p", {"source": str(folder)})
    model = load_encoder("p", {"source": str(folder), "allow_pickle_weights": True})
    reference = load_encoder("s", {"source": str(tiny_bert)})
    for (name, got), (_, want) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(got, want), name  # the pickled weights, not a fresh initialisation


def run_with_file_size_limit(*args, limit_bytes=50_000):
    """The CLI with writes limited to ``limit_bytes`` per file (EFBIG, as a full disk gives ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "headsieve", *args], capture_output=True, text=True, preexec_fn=limit,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )  # fmt: skip


def test_full_disk_is_one_line(tmp_path, tiny_bert, data):
    """A write that fails for want of space (here a file size limit: EFBIG) is one line; the traceback is logged."""
    out = tmp_path / "tokens.parquet"
    log = tmp_path / "t.log"
    corpus = data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu"
    proc = run_with_file_size_limit(*tokenize_args({"source": str(tiny_bert)}, corpus, out, log=log))
    refused(proc, "tokens.parquet: cannot write (", out)
    assert "free space or raise the limit, then rerun" in proc.stderr
    assert not list(tmp_path.glob(".tokens.parquet.tmp-*"))
    assert "Traceback" in log.read_text()  # the traceback stays in the log


def test_full_disk_during_a_download_is_not_called_a_network_problem(tmp_path):
    import hashlib

    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 800)
    out = tmp_path / "data" / "big.bin"
    proc = run_with_file_size_limit(
        "fetch", "--url", source.as_uri(), "--sha256", hashlib.sha256(source.read_bytes()).hexdigest(), "--output", str(out)
    )
    line = refused(proc, "big.bin: cannot write (", out)
    assert "no network" not in line


def test_an_unforeseen_exception_is_one_line_and_its_traceback_is_logged(tmp_path):
    """Any exception that is not the project's own error still reaches the user as one line (exit status 3)."""
    import pandas as pd

    from headsieve.steps.pruning import write_made_from

    evaluations = tmp_path / "evaluations.parquet"  # of the right provenance, without the columns the drops need
    write_made_from(pd.DataFrame({"x": [1]}), evaluations, {"model": "m", "task": "t", "seed": 1, "evals": {}})
    log = tmp_path / "r.log"
    proc = run_cli(
        "--log", str(log), "multilingual-pruning", "--evaluations", str(evaluations), "--output",
        str(tmp_path / "drops.parquet"), "--figure", str(tmp_path / "fig"), "--title", "t",
    )  # fmt: skip
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("headsieve: error: unexpected KeyError: "), proc.stderr
    assert f"(traceback in {log})" in lines[0]
    assert "Traceback" not in proc.stderr and "Traceback" in log.read_text()
    assert not (tmp_path / "drops.parquet").exists()


@pytest.mark.parametrize(
    "command, values, expected",
    [
        ("importance", {"examples": 0, "seed": 1}, "--examples 0: 0 is less than the minimum of 1 (the range of config key pruning.importance_examples)"),
        ("evaluate-masks", {"batch_size": -4}, "--batch-size -4: -4 is less than the minimum of 1"),
        ("finetune", {"seed": -1}, "--seed -1: -1 is less than the minimum of 0 (the range of config key seed)"),
        ("importance", {"examples": 10, "seed": 0}, None),
    ],
)
def test_one_helper_checks_every_command(command, values, expected):
    """headsieve.cli.common.validate_args runs for every command: ARG_SETTINGS maps arguments to config keys."""
    import argparse

    from headsieve.cli.common import validate_args

    args = argparse.Namespace(command=command, **values)
    if expected is None:
        validate_args(args)
        return
    with pytest.raises(HeadsieveError) as err:
        validate_args(args)
    assert expected in str(err.value)


def test_full_disk_during_the_dump_leaves_no_folder(tmp_path, tiny_bert, data):
    tokens = tmp_path / "tokens.parquet"
    args = tokenize_args({"source": str(tiny_bert)}, data / "ud/UD_English-EWT/en_ewt-ud-dev.conllu", tokens)
    args[args.index("--corpus-spec") + 1] = json.dumps({"format": "conllu", "max_sentences": 20})
    assert run_cli(*args).returncode == 0
    out = tmp_path / "attention"
    proc = run_with_file_size_limit(
        "--log", str(tmp_path / "dump.log"), "dump", "--model", "m", "--model-spec", json.dumps({"source": str(tiny_bert)}),
        "--corpus", "c", "--tokens", str(tokens), "--output", str(out), limit_bytes=60_000,
    )  # fmt: skip
    refused(proc, "attention: cannot write (", out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".attention")] == []  # no temporary folder left


# ------------------------------------------------------------------------------------ registration (issue 16)



def test_every_command_is_registered_once_by_the_module_of_its_stage():
    from headsieve.cli import STAGES, build_parser
    from headsieve.cli.common import COMMANDS, command

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command")
    assert list(subs.choices) == sorted(COMMANDS, key=lambda n: STAGES.index(COMMANDS[n].stage))
    for name, cmd in COMMANDS.items():
        assert cmd.stage in STAGES, name
        assert (REPO / "workflow" / "rules" / f"{cmd.stage}.smk").exists(), cmd.stage
    with pytest.raises(HeadsieveError, match="registered twice"):
        command("tokenize", "again")(lambda sub: None)
    assert COMMANDS["tokenize"].stage == "attention"


def test_the_workflow_calls_registered_commands_of_the_same_stage():
    """Every `headsieve ... <command>` of a rule file is a command registered by the CLI module of that stage."""
    import re

    from headsieve.cli.common import COMMANDS

    called = {}
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for name in re.findall(r'"headsieve --log \{log:q\} ([a-z0-9-]+)', rules.read_text()):
            called[name] = rules.stem
    assert len(called) >= 25
    assert {name: COMMANDS[name].stage for name in called} == called


def test_one_device_default_for_every_command():
    from headsieve.cli import build_parser
    from headsieve.cli.common import DEVICE_DEFAULT

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command")
    defaults = {}
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.dest == "device":
                defaults[name] = action.default
    assert DEVICE_DEFAULT == "cpu"
    assert {"dump", "finetune", "evaluate-languages", "translation-roles"} <= set(defaults)
    assert set(defaults.values()) == {"cpu"}


def test_help_lists_every_command():
    from headsieve.cli.common import COMMANDS

    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert set(COMMANDS) <= listed
    assert COMMANDS["dump"].help.split(" (")[0] in " ".join(proc.stdout.split())


def test_the_command_line_imports_no_torch_before_it_pins_the_threads():
    """Importing the CLI (every stage module and step module) loads no torch: main() sets the thread pools'
    environment first."""
    import subprocess
    import sys

    code = "import sys, headsieve.cli; print(sorted(m for m in ('torch', 'pandas', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------ README "From Python"

MARKER = "<!-- from-python:"


def readme_python_block() -> str:
    text = (REPO / "README.md").read_text()
    assert text.count(MARKER) == 1
    after = text.split(MARKER, 1)[1]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```\n", start)]


def with_variables(code: str, **values) -> str:
    """The block with each documented variable's assignment (``NAME = ...`` at the start of a line) replaced."""
    import re

    for name, value in values.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, flags=re.M)
        assert n == 1, f"README block: no single assignment of {name}"
    return code


def test_readme_python_block_makes_a_role_map_and_a_pruning_curve(tmp_path, data):
    import subprocess
    import sys

    import pandas as pd

    n = 16
    code = with_variables(readme_python_block(), DATA=f"Path({str(data)!r})", OUT=f"Path({str(tmp_path / 'out')!r})", N=n)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert len(pd.read_parquet(out / "tokens.parquet")) == n
    tests = pd.read_parquet(out / "tests.parquet")
    assert set(tests["model"]) == {"minilm"} and set(tests["corpus"]) == {"ewt_dev"}
    heads = tests[["layer", "head"]].drop_duplicates()
    assert len(heads) == 6 * 12  # minilm: 6 layers x 12 heads
    tested = tests["p"].notna()
    assert tested.any() and tests.loc[tested, "p"].between(0, 1).all() and tests["label"].dtype == bool
    assert tests.loc[~tested, "untested_reason"].notna().all() and not tests.loc[~tested, "label"].any()
    assert {"local", "delimiter"} <= set(tests["role"])
    for figure in ("role_map", "metric_by_fraction"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    assert (out / "roles.md").read_text().startswith("#")
    curve = pd.read_parquet(out / "sst2" / "evaluations.parquet")
    primary = curve[curve["primary"]].sort_values("fraction")
    assert primary["fraction"].tolist() == [0.0, 0.25, 0.5]
    assert primary["heads_pruned"].tolist() == [0, 18, 36]  # the share of minilm's 72 heads
    assert primary["value"].between(0, 1).all() and (primary["n"] == n).all()


def test_step_settings_are_the_config_entries_as_they_are():
    """The steps pass the config entries on unchanged (their provenance records them); the task's sizes are
    read from its entry."""
    import dataclasses

    from headsieve.steps.pruning import parse_pruned
    from headsieve.steps.settings import TaskSettings

    entry = {"max_length": 64, "max_train": 100, "train": "sst2_train"}
    task = TaskSettings(entry, {"format": "glue", "task": "sst2"}, ["train.tsv"])
    assert task.options is entry and (task.max_length, task.max_train, task.max_eval) == (64, 100, None)
    assert task.eval == [] and task.eval_spec is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.options = {}
    pruned = parse_pruned(["random=0.25=a/b=c", "top=0.5=d"])
    assert pruned == {("random", 0.25): "a/b=c", ("top", 0.5): "d"}
