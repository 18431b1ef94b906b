"""Architectures (one file per model), the backbone/head contract and the registry.

Importing this package registers the built-in models (each module's ``@register_backbone``).
"""

from cider_mer.models import cider, dlf, emt_dlfr, late_fusion, lnln, mplmm, mult  # noqa: F401  (registration)
