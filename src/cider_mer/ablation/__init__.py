"""The ablation suite: the paper's Table V variants (:mod:`.variants`) and the runner (:mod:`.suite`)."""

from cider_mer.ablation.variants import (VARIANT_NAMES, VARIANTS, Variant, config_differences, get_variant,
                                         parse_variants)

__all__ = ["VARIANT_NAMES", "VARIANTS", "Variant", "config_differences", "get_variant", "parse_variants",
           "run_ablation", "default_base_config"]


def __getattr__(name):  # the suite pulls in torch and the trainer: import it only when asked
    if name in ("run_ablation", "default_base_config"):
        from cider_mer.ablation import suite

        return getattr(suite, name)
    raise AttributeError(name)
