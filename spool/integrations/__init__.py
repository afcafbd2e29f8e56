"""Integrations that route other tracing libraries into a spool.

- `spool.integrations.sgp_tracing`: the Scale GP SDK's own tracing
  (``scale_gp_beta.lib.tracing``), via its ``init(export_fn=...)`` hook.

Each integration is its own module, imported only when used (they import the SDKs they
integrate with, which ``import spool`` never does).
"""

from __future__ import annotations

__all__: list[str] = []
