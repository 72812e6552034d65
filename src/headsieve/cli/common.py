"""What every stage module of the command line shares: the command registry (one decorator), JSON arguments,
the device and thread options (one default), and the check of numbers against the config schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from headsieve.errors import HeadsieveError

#: the default of ``--device`` of every command that has one (the workflow passes the config's device)
DEVICE_DEFAULT = "cpu"


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, help line, the stage module that registered it, and ``build(sub)`` that adds
    its arguments to the subparser ``sub`` and returns ``run(args)``."""

    name: str
    help: str
    stage: str
    build: Callable


#: command name -> Command, in registration order
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str):
    """Register ``build(sub) -> run(args)`` as the subcommand ``name``; a name registered twice is an error."""

    def register(build):
        if name in COMMANDS:
            raise HeadsieveError(f"command '{name}' registered twice ({COMMANDS[name].stage}, {build.__module__})")
        COMMANDS[name] = Command(name, help, build.__module__.rpartition(".")[2], build)
        return build

    return register


def parse_json(text: str, kind: type = dict):
    """A JSON command-line argument of the given kind (object or list); one-line error otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise HeadsieveError(f"bad JSON argument: {err}") from None
    if not isinstance(value, kind):
        raise HeadsieveError(f"JSON argument must be {'an object' if kind is dict else 'a list'}")
    return value


def json_object(text: str) -> dict:
    return parse_json(text, dict)


def json_list(text: str) -> list:
    return parse_json(text, list)


def add_required(sub, *flags: str, **helps: str) -> None:
    """Required string arguments ``flags``, in order; ``helps``: the help of some, by their dest name
    (``--model-spec`` -> ``model_spec``)."""
    for flag in flags:
        sub.add_argument(flag, required=True, help=helps.get(flag.lstrip("-").replace("-", "_")))


def add_model(sub, help: str = "model key") -> None:
    """``--model`` (the model's key in the config) and ``--model-spec`` (its config entry, JSON)."""
    sub.add_argument("--model", required=True, help=help)
    sub.add_argument("--model-spec", required=True, type=json_object, help="the model's config entry (JSON)")


def add_seed(sub) -> None:
    """``--seed`` (required; checked against the config's ``seed``)."""
    sub.add_argument("--seed", type=int, required=True)


def add_runtime(sub, threads: bool = True) -> None:
    """``--threads`` (torch's thread pools) and ``--device`` (cpu, cuda or auto; one default everywhere)."""
    if threads:
        sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--device", default=DEVICE_DEFAULT, help=f"cpu, cuda or auto (default {DEVICE_DEFAULT})")


def setup_torch(threads: int, seed: int = 0) -> None:
    """Torch's thread count and seed, before a step runs a model."""
    import torch

    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)


def pick_device(name: str) -> str:
    """``auto`` -> cuda when present, else cpu; ``cuda`` without a CUDA device is a one-line error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HeadsieveError("device 'cuda' requested but no CUDA device is available (set device: auto or cpu)")
    return name


def runtime(args, seed: int = 0) -> str:
    """Set up torch from ``--threads`` (and ``seed``); the device ``--device`` names."""
    setup_torch(args.threads, seed)
    return pick_device(args.device)


def collect_step(sub, step, inputs_help: str | None = None):
    """A command that runs ``step(inputs, output)``: one table from the tables ``--inputs``."""
    sub.add_argument("--inputs", nargs="+", required=True, help=inputs_help)
    add_required(sub, "--output")

    def run(args):
        step(args.inputs, args.output)

    return run


# ---------------------------------------------------------------- argument ranges (one place: the config schema)

#: command -> {argument dest: config key whose schema (type, range) the argument must satisfy}
ARG_SETTINGS = {
    "tokenize": {"max_length": "attention.max_length"},
    "dump": {"max_length": "attention.max_length", "batch_tokens": "attention.batch_tokens", "shard_mb": "attention.shard_mb"},
    "roles-test": {"tau": "roles.tau", "alpha": "roles.alpha", "tau_by_role": "roles.tau_by_role"},
    "importance": {"examples": "pruning.importance_examples"},
    "compensation": {"examples": "pruning.compensation_examples"},
    "evaluate-masks": {"batch_size": "pruning.eval_batch_size"},
    "*": {"seed": "seed"},  # every command with --seed
}


def validate_args(args) -> None:
    """Check every argument listed in :data:`ARG_SETTINGS` for ``args.command`` against the config schema."""
    settings = dict(ARG_SETTINGS["*"], **ARG_SETTINGS.get(getattr(args, "command", None), {}))
    if not any(getattr(args, dest, None) is not None for dest in settings):
        return
    from headsieve.config import check_setting

    for dest, key in settings.items():
        value = getattr(args, dest, None)
        if value is not None:
            check_setting(value, key, "--" + dest.replace("_", "-"))
