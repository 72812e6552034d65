"""Steps of ``workflow/rules/translation.smk``: head importance, masks, BLEU/chrF under masks, roles and the
report of an encoder-decoder translation model.  The jobs themselves are in :mod:`headsieve.translation.jobs`."""

from __future__ import annotations

from headsieve.steps.settings import SentencePairs


def importance(spec: dict, pairs: SentencePairs, options: dict, output, device: str = "cpu"):
    """Rule ``translation_importance``: gate importance of every head on the importance pool of ``pairs``."""
    from headsieve.translation import jobs

    return jobs.importance(spec, pairs.source, pairs.target, pairs.options, options, output, device)


def select_masks(spec: dict, strategies: list, fractions: list, seed: int, output, importance=""):
    """Rule ``translation_select_masks``: the heads each strategy prunes at each fraction, one seed."""
    from headsieve.translation import jobs

    return jobs.select_masks(jobs.model_shapes(spec), strategies, fractions, seed, importance, output)


def evaluate_masks(spec: dict, masks, pairs: SentencePairs, options: dict, output, translations=None, device: str = "cpu"):
    """Rule ``translation_evaluate_masks``: BLEU/chrF of every mask of one seed on the test pairs (and every
    translation in ``translations`` when given)."""
    from headsieve.translation import jobs

    return jobs.evaluate_masks(
        spec, masks, pairs.source, pairs.target, pairs.options, options, output, translations or None, device
    )


def roles(spec: dict, pairs: SentencePairs, options: dict, output, device: str = "cpu"):
    """Rule ``translation_roles``: roles of encoder self-attention and cross-attention heads."""
    from headsieve.translation import jobs

    return jobs.roles(spec, pairs.source, pairs.target, pairs.options, options, output, device)


def collect(inputs: list, output):
    """Rule ``translation_collect``: one BLEU/chrF table from the score tables of every seed."""
    from headsieve.translation import jobs

    return jobs.collect(inputs, output)


def report(scores, importance, roles, model: str, comparisons, figures, title: str):
    """Rule ``translation_report``: paired strategy comparisons and figures of one translation model."""
    from headsieve.translation import jobs

    return jobs.report(scores, importance, roles, model, comparisons, figures, title)
