"""Beyond one machine: descriptor extraction for index building on a Ray cluster (optional `ray` extra)."""

from .ray_build import RayConfig, describe_on_ray, ray_available, ray_describer

__all__ = ["RayConfig", "describe_on_ray", "ray_available", "ray_describer"]
