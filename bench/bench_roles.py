"""Benchmark the role stage against the dump it reads, for a 12-layer x 12-head model on UD sentences.

Run:  python bench/bench_roles.py [--sentences 2000] [--threads 2] [--model e5|minilm] [--repeats 1]

On the same sentences in one run: the time of the tokenize + dump step, then of everything the role stage
does with that dump (all roles' sieve scores, the syntactic roles' positional control and the Clark-style
head statistics in one pass, then the t tests with correction and the control's paired tests), as
sentences/s and as a share of the dump's time.  The default model is the 12 x 12 multilingual encoder the
``convert_e5`` rule builds (converted here into a temporary folder when resources/models/multilingual-e5-small
is absent); ``bert-base-shape`` is a random model of BERT-base's shapes.  ``--repeats`` runs the role stage
that many times on the same dump (one line each; the first run is the one a workflow step makes).  The
load average before and after is printed: the machine's other work shows in the times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEADSIEVE_DATA_DIR", REPO.parent / "shared" / "data"))
EWT = [DATA / "ud/UD_English-EWT/en_ewt-ud-dev.conllu", DATA / "ud/UD_English-EWT/en_ewt-ud-test.conllu"]


def model_spec(name: str, tmp: Path) -> dict:
    if name == "minilm":
        return {"source": "minilm"}
    if name == "bert-base-shape":
        # BERT-base's shapes (12 x 12, hidden 768, uncased vocabulary), random weights: the cost of the
        # dump and of the role stage depends on the shapes only
        import shutil

        import torch
        from transformers import BertConfig, BertModel

        from headsieve.models.load import PRESETS

        folder = tmp / "bert-base-shape"
        folder.mkdir()
        minilm = Path(PRESETS["minilm"]())
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(minilm / f, folder / f)
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(folder)
        return {"source": str(folder)}
    folder = REPO / "resources/models/multilingual-e5-small"
    if not folder.is_dir():
        from headsieve.models.convert_e5 import convert_e5

        folder = convert_e5(tmp / "e5")
    return {"source": str(folder)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="e5", choices=["e5", "minilm", "bert-base-shape"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    from headsieve.attention import dump_attention
    from headsieve.io.atomic import write_table
    from headsieve.io.conllu import read_conllu
    from headsieve.models.load import load_encoder, load_tokenizer, model_shape
    from headsieve.roles.controls import add_controls
    from headsieve.roles.score import score_dump
    from headsieve.roles.tests import role_tests
    from headsieve.tokens import encode_sentences, records_table

    torch.set_num_threads(args.threads)
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    sentences = (read_conllu(EWT[0]) + read_conllu(EWT[1]))[: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = model_spec(args.model, tmp)
        tokenizer = load_tokenizer(args.model, spec)
        model = load_encoder(args.model, spec)
        L, H = model_shape(model)
        start = time.perf_counter()
        rows, _ = encode_sentences(tokenizer, sentences, 128)
        write_table(records_table([dict(r) for r in rows], args.model, "ewt"), tmp / "tokens.parquet")
        dump_attention(model, rows, tmp / "dump", args.model, "ewt", progress=False)
        t_dump = time.perf_counter() - start
        runs = [role_stage(tmp, args.model, score_dump, role_tests, add_controls) for _ in range(args.repeats)]
    n = len(sentences)
    print(f"{args.model} ({L} layers x {H} heads), {n} UD EWT sentences, {args.threads} threads")
    print(f"load average before: {load_before}, after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| step | seconds | sentences/s | share of the dump's time |")
    print("|---|---:|---:|---:|")
    print(f"| tokenize + dump | {t_dump:.1f} | {n / t_dump:.0f} | 100% |")
    for k, (t_score, t_tests, n_tests) in enumerate(runs, 1):
        run = f" (run {k})" if len(runs) > 1 else ""
        total = t_score + t_tests
        print(f"| scores (every role, controls) + head statistics{run} | {t_score:.1f} | {n / t_score:.0f} | {t_score / t_dump:.0%} |")
        print(f"| t tests + correction ({n_tests} tests){run} | {t_tests:.1f} | {n / t_tests:.0f} | {t_tests / t_dump:.0%} |")
        print(f"| role stage together{run} | {total:.1f} | {n / total:.0f} | {total / t_dump:.0%} |")


def role_stage(tmp: Path, model: str, score_dump, role_tests, add_controls):
    """(seconds of the scores pass, seconds of the tests, number of tests) of one role stage on the dump."""
    start = time.perf_counter()
    scores, _ = score_dump(tmp / "tokens.parquet", tmp / "dump", model, "ewt", progress=False)
    t_score = time.perf_counter() - start
    start = time.perf_counter()
    frame = scores.to_pandas()
    tests = add_controls(role_tests(frame), frame)  # with the syntactic roles' positional control
    return t_score, time.perf_counter() - start, len(tests)


if __name__ == "__main__":
    main()
