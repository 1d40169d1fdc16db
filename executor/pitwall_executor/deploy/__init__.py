"""Kubernetes manifests rendered from one typed values file (docs/scale-out.md, "Manifests").

``values.py`` is the model (``pitwall deploy render --values FILE``), ``render.py`` turns it
into plain objects and multi-document YAML.
"""

from __future__ import annotations

from pitwall_executor.deploy.render import render, to_yaml, write_manifests
from pitwall_executor.deploy.values import Values, load_values

__all__ = ["Values", "load_values", "render", "to_yaml", "write_manifests"]
