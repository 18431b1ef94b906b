"""The ablation suite: the paper's Table V variants (:mod:`.variants`), one run per (variant, seed)
(:mod:`.run`), the typed aggregate (:mod:`.aggregate`), its reports (:mod:`.render`) and the runner (:mod:`.suite`)."""

from cider_mer.ablation.variants import VARIANT_NAMES, VARIANTS, Variant, get_variant, parse_variants

__all__ = ["VARIANT_NAMES", "VARIANTS", "Variant", "get_variant", "parse_variants",
           "run_ablation", "default_base_config"]


def __getattr__(name):  # the suite pulls in torch and the trainer: import it only when asked
    if name in ("run_ablation", "default_base_config"):
        from cider_mer.ablation import suite

        return getattr(suite, name)
    raise AttributeError(name)
